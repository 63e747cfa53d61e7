#!/usr/bin/env bash
# Pipeline benchmark: `mailworker run --once` against mbsync on the same
# 2,000-message Dovecot mailbox, in one run. Prints messages/s, MB/s and
# peak RSS for both, and the throughput ratio. Needs dovecot-imapd and isync.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
command -v mbsync >/dev/null || need+=(isync)
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
MAILWORKER_BENCH=1 go test -count=1 -run TestPipelineVsMbsync -v -timeout 30m ./worker |
	grep -vE '^\s+[A-Z][a-z]{2} [0-9 ]+[0-9:]+ ' # drop Dovecot's log lines
