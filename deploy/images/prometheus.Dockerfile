# A stand-in for prom/prometheus where no registry can be reached: Debian's `prometheus` package on a
# Debian base (made locally by scripts/build_images.sh). It runs like the official image (user nobody, uid 65534,
# data in /prometheus, configuration in /etc/prometheus), so docker-compose.yml's prometheus service runs
# it unchanged: `PROMETHEUS_IMAGE=localhost/prometheus-debian:bookworm podman-compose up`.
ARG BASE_IMAGE=localhost/debian-bookworm:base
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /prometheus \
    && chown nobody:nogroup /prometheus
USER 65534:65534
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
