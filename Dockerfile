# Images of antilog (the node agent) and logarithmd (the central daemon).
#
#   docker build --target logarithmd -t logarithm/logarithmd .
#   docker build --target antilog -t logarithm/antilog .
#
# The usual way compiles in the `build` stage (the rust and debian images come from a
# registry). Offline, scripts/build-images.sh makes the base image from Debian packages,
# compiles on the host, and builds with RUST_IMAGE set to that base image and PREBUILT=1:
# the `build` stage then takes the two binaries from the build context instead of
# compiling. Works with BuildKit and with the classic builder.

ARG RUST_IMAGE=rust:1-slim-bookworm
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
ARG PREBUILT=""
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /out; \
    if [ -n "$PREBUILT" ]; then \
      cp antilog logarithmd /out/; \
    else \
      cargo build --release --locked -p antilog -p logarithmd --bins; \
      cp target/release/antilog target/release/logarithmd /out/; \
    fi

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=""
ARG SOURCE=""
LABEL org.opencontainers.image.vendor="Logarithm" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}"
# An unprivileged user of its own (uid/gid 10001) and a data directory it owns.
RUN groupadd --system --gid 10001 logarithm \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/logarithm \
      --shell /usr/sbin/nologin logarithm \
 && mkdir -p /var/lib/logarithm \
 && chown 10001:10001 /var/lib/logarithm

FROM runtime AS logarithmd
LABEL org.opencontainers.image.title="logarithmd" \
      org.opencontainers.image.description="Logarithm's central daemon: ingest, storage, verdicts, query API, flow engine, webhooks."
COPY --from=build /out/logarithmd /usr/local/bin/logarithmd
ENV LOGARITHMD_LISTEN=0.0.0.0:7300 \
    LOGARITHMD_STORAGE_URL=sqlite:///var/lib/logarithm/logarithm.db
USER 10001:10001
WORKDIR /var/lib/logarithm
EXPOSE 7300
ENTRYPOINT ["/usr/local/bin/logarithmd"]

# antilog reads /var/log/pods and the Docker socket, which only root may read on most
# nodes: the image runs unprivileged, and the DaemonSet (deploy/kubernetes) runs it as
# root with every capability dropped but DAC_READ_SEARCH.
FROM runtime AS antilog
LABEL org.opencontainers.image.title="antilog" \
      org.opencontainers.image.description="Logarithm's node agent: collects container logs with timestamps and ships them in numbered batches."
COPY --from=build /out/antilog /usr/local/bin/antilog
ENV ANTILOG_DATA_DIR=/var/lib/logarithm
USER 10001:10001
WORKDIR /var/lib/logarithm
ENTRYPOINT ["/usr/local/bin/antilog"]
