# mailworker image: a static binary on distroless, running as the
# distroless "nonroot" user (uid 65532). No secrets are baked in: the
# configuration is mounted at run time and secrets come from environment
# variables or mounted files (see docker-compose.yml, docs/replay.md).
#
# Plain Dockerfile syntax (no BuildKit-only features), so docker-compose
# v1 builds it with the classic builder too.
#
# Base images are pinned to release tags; pin them by digest as well
# (FROM image:tag@sha256:...) when building release images.

FROM golang:1.26.8-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" \
      -o /out/mailworker ./cmd/mailworker \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mailworker /usr/local/bin/mailworker
# The data directory (SQLite, embedded NATS store, raw copies of
# unparseable mail) must be writable by the nonroot user; a named volume
# mounted here inherits this ownership.
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
WORKDIR /data
ENV MAILWORKER_CONFIG=/etc/mailworker/mailworker.yaml
ENTRYPOINT ["/usr/local/bin/mailworker"]
CMD ["run"]
