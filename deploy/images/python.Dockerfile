# A stand-in for python:3.x-slim where no registry can be reached: a Debian base (made locally by
# scripts/build_images.sh with debootstrap and `podman import`) plus Debian's own Python. Debian bookworm's
# python3 is 3.11 (clipserve needs 3.10 or later); python-is-python3 gives the `python` command the
# official images have, and python3-venv the `python -m venv` the Dockerfile runs.
ARG BASE_IMAGE=localhost/debian-bookworm:base
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
CMD ["python3"]
