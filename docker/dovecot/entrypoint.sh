#!/bin/sh
# Generates the TLS certificate and the user database at container start,
# so neither is baked into the image, then runs the given command.
set -eu

: "${DOVECOT_USER:=helpdesk}"
if [ -z "${DOVECOT_PASSWORD:-}" ]; then
  echo "entrypoint: DOVECOT_PASSWORD is not set" >&2
  exit 1
fi

mkdir -p /run/dovecot/state
# A fresh self-signed certificate for the names the other containers use.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=dovecot" \
  -addext "subjectAltName=DNS:dovecot,DNS:localhost,IP:127.0.0.1" \
  -keyout /run/dovecot/key.pem -out /certs/cert.pem 2>/dev/null
chmod 0600 /run/dovecot/key.pem
chmod 0644 /certs/cert.pem

# passwd-file line: user:{SHA512-CRYPT}hash (the plain password is not stored).
hash=$(doveadm pw -s SHA512-CRYPT -p "$DOVECOT_PASSWORD")
printf '%s:%s\n' "$DOVECOT_USER" "$hash" > /run/dovecot/users
chown root:dovecot /run/dovecot/users
chmod 0640 /run/dovecot/users
unset DOVECOT_PASSWORD

exec "$@"
