# syntax=docker/dockerfile:1
#
# changegate images. One build stage, three small final targets that share their layers:
#
#   (default)  scratch + CA certificates + the static binary, running as a non-root user.
#              `docker run ghcr.io/changegate/changegate:X.Y.Z gate ...`
#   action     the same image run as root, for the GitHub container action: the runner
#              mounts the workspace and the GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files owned
#              by its own user, and GitHub requires Docker actions to run as the default
#              (root) user or they cannot write there.
#   gitlab     the default image plus a static busybox shell, non-root: GitLab's executors
#              run a job's `script:` through a shell inside the job's image.
#   serve      the default image running `changegate serve` as the non-root user, on port
#              8080, with the ledger in /data (owned by that user; mount a volume there).
#
# docker build -t changegate .                       # the default target
# docker build --target action -t changegate:action .
# docker build --target gitlab -t changegate:gitlab .
# docker build --target serve -t changegate:serve .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-alpine AS build
# Alpine's own packages, for the build only: none reaches a final image but the CA bundle
# and the static busybox, refreshed with each release build. musl-dev and linux-headers
# are what the bundled C and assembly (SQLite, ring) compile against.
# hadolint ignore=DL3018
RUN apk add --no-cache musl-dev linux-headers ca-certificates busybox-static
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY docs/reference/config.schema.json ./docs/reference/
# musl links statically by default: the binary needs no loader and no libc at run time.
# TLS is rustls (no OpenSSL). The release profile in Cargo.toml sets LTO, one codegen
# unit, panic=abort and strip.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/changegate /rootfs/changegate
# The whole root filesystem of the default image: the binary, the CA bundle, a passwd and
# group naming the non-root user, and a world-writable /tmp (SQLite's temporary files).
RUN install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && mkdir -m 1777 /rootfs/tmp \
 && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'changegate:x:65532:65532:changegate:/tmp:/sbin/nologin' > /rootfs/etc/passwd \
 && printf '%s\n' 'root:x:0:' 'changegate:x:65532:' > /rootfs/etc/group \
 && mkdir -p /shell/bin \
 && cp /bin/busybox.static /shell/bin/busybox \
 && for applet in $(/shell/bin/busybox --list); do ln -s busybox "/shell/bin/$applet"; done \
 && ln -s /changegate /shell/bin/changegate \
 && mkdir -p /serve/data

FROM scratch AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=https://github.com/changegate/changegate
LABEL org.opencontainers.image.title="changegate" \
      org.opencontainers.image.description="A change gate for deployment pipelines: ITSM change records, pre-approval from the team's track record, exit codes that pass or block the deploy." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.documentation="${SOURCE}/blob/main/docs/shipping.md" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /rootfs/ /
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
ENTRYPOINT ["/changegate"]

FROM runtime AS action
# GitHub runs Docker actions as root, and says so: the workspace and the file-command files
# it mounts are not writable by any other user.
# hadolint ignore=DL3002
USER 0:0

FROM runtime AS gitlab
COPY --from=build /shell/ /
ENV PATH=/bin

FROM runtime AS serve
# The ledger's folder, writable by the non-root user only (scratch has no chown).
COPY --from=build --chown=65532:65532 /serve/ /
ENV CHANGEGATE_LEDGER=/data/ledger.db \
    CHANGEGATE_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/changegate", "serve"]

# The default target: the non-root image without a shell.
FROM runtime
