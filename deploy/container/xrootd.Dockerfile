# syntax=docker/dockerfile:1.7
# XRootD forwarding proxy / XCache for the compose file: Debian's xrootd-server, run as the
# unprivileged xrootd user with the configuration files of deploy/xrootd/ mounted in.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends xrootd-server xrootd-client \
 && rm -rf /var/lib/apt/lists/* \
 && (id xrootd >/dev/null 2>&1 || useradd --system --home-dir /var/spool/xrootd xrootd) \
 && mkdir -p /run/xrootd /var/cache/xrootd \
 && chown xrootd: /run/xrootd /var/cache/xrootd
USER xrootd
EXPOSE 1094
HEALTHCHECK --interval=30s --timeout=5s --retries=3 \
    CMD ["xrdfs", "localhost:1094", "query", "config", "version"]
ENTRYPOINT ["xrootd"]
