# syntax=docker/dockerfile:1
#
# clipserve images. Pick one with the build target:
#
#   docker build --target cpu -t clipserve:cpu .   # python slim, ONNX Runtime + PyTorch (CPU build), no CUDA
#   docker build --target gpu -t clipserve:gpu .   # CUDA runtime base, PyTorch with CUDA, onnxruntime-gpu
#
# `cpu` is the last stage, so a plain `docker build .` gives it too.
# A slimmer CPU image that serves ONNX models only (no torch):
#   docker build --target cpu --build-arg WITH_TORCH=0 -t clipserve:cpu-onnx .
#
# Models are read from CLIPSERVE_MODEL_DIR=/models. The bundled demo model is baked in as the default;
# mount your own model repository over /models (read-only is fine) to serve other models.
#
# The base images are build arguments (PYTHON_IMAGE, CUDA_IMAGE). scripts/build_images.sh builds these
# images with podman from a locally made stand-in base where the official one cannot be pulled, and
# exports the demo model's ONNX graphs into the build context first (see docs/deploy.md). HEALTHCHECK is
# a Docker-format instruction: podman keeps it with `podman build --format docker`.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# torch==2.14.1 on PyPI is built against CUDA 13.0 (and onnxruntime-gpu 1.31 too): the GPU image uses a
# CUDA 13 runtime with cuDNN, so ONNX Runtime finds cuBLAS/cuDNN on the system library path.
# Hosts need an NVIDIA driver new enough for CUDA 13 and the NVIDIA Container Toolkit.
ARG CUDA_IMAGE=nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------------
# The model repository baked into both images: the demo model, readable by the non-root user whatever
# its mode in the build context (a training run may leave its weights 0600).
FROM ${PYTHON_IMAGE} AS models
COPY models/clipserve-demo /models/clipserve-demo
RUN chmod -R a+rX,go-w /models

# ---------------------------------------------------------------------------------------------------
# GPU build stage.
FROM ${CUDA_IMAGE} AS gpu-build
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
# Distribution packages are not version-pinned: pins of Ubuntu's archive break as it moves on; the base
# image tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
# torch from PyPI is the CUDA build. The server extra pulls `onnxruntime` (CPU), which shares its
# package directory with `onnxruntime-gpu`: remove the CPU one, then reinstall the GPU one over it.
RUN pip install --no-cache-dir "./[torch,gpu]" "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    && pip uninstall -y onnxruntime \
    && pip install --no-cache-dir --force-reinstall --no-deps "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"
# The demo model is served by ONNX Runtime: export its graphs now, not at every container start.
COPY --from=models /models /models
RUN test -f /models/clipserve-demo/onnx/image.onnx \
    || clipserve export --model clipserve-demo --model-dir /models \
    && chmod -R a+rX,go-w /models

# ---------------------------------------------------------------------------------------------------
# GPU runtime image.
FROM ${CUDA_IMAGE} AS gpu
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 clipserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin clipserve
COPY --from=gpu-build /opt/venv /opt/venv
COPY --from=gpu-build /models /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    CLIPSERVE_HOST=0.0.0.0 \
    CLIPSERVE_PORT=8000 \
    CLIPSERVE_GRPC_PORT=50051 \
    CLIPSERVE_MODEL_DIR=/models \
    CLIPSERVE_DEVICE=cuda
USER 10001:10001
EXPOSE 8000 50051
HEALTHCHECK --interval=15s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CLIPSERVE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["clipserve"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------------
# CPU build stage: a virtual environment in /opt/venv, copied whole into the runtime stage.
FROM ${PYTHON_IMAGE} AS cpu-build
# torch==2.14.1 on PyPI is a CUDA build (it pulls gigabytes of nvidia-* wheels). The CPU image takes
# torch from PyTorch's CPU wheel index instead; `pip install .[torch]` afterwards finds the pin
# (torch==2.14.1 matches 2.14.1+cpu) already satisfied.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
ARG WITH_TORCH=1
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
# pip's cache is a build cache mount: it speeds up rebuilds and never lands in an image.
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ "$WITH_TORCH" = "1" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" \
            "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        && pip install "./[torch]"; \
    else \
        pip install "./[server]"; \
    fi
# The demo model is served by ONNX Runtime: its graphs are exported now, not at every container start.
# Graphs already in the build context (models/clipserve-demo/onnx: scripts/build_images.sh exports them
# there) are used as they are. Otherwise they are exported here, with the image's torch or, without torch
# (WITH_TORCH=0), with torch in a throwaway venv (/opt/export) that never leaves this build stage.
COPY --from=models /models /models
RUN --mount=type=cache,target=/root/.cache/pip \
    if [ ! -f /models/clipserve-demo/onnx/image.onnx ]; then \
        if [ "$WITH_TORCH" != "1" ]; then \
            python -m venv /opt/export \
            && /opt/export/bin/pip install --index-url "$TORCH_INDEX_URL" \
                "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
            && /opt/export/bin/pip install "./[torch]"; \
        fi \
        && PATH="/opt/export/bin:$PATH" clipserve export --model clipserve-demo --model-dir /models; \
    fi \
    && test -f /models/clipserve-demo/onnx/text.onnx \
    && chmod -R a+rX,go-w /models

# ---------------------------------------------------------------------------------------------------
# CPU runtime image.
FROM ${PYTHON_IMAGE} AS cpu
RUN groupadd --system --gid 10001 clipserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin clipserve
COPY --from=cpu-build /opt/venv /opt/venv
COPY --from=cpu-build /models /models
# Nothing is written under / at run time (Kubernetes mounts the root file system read-only): caches of
# downloaded weights go to /tmp (an emptyDir there), and byte code is compiled at install time.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    CLIPSERVE_HOST=0.0.0.0 \
    CLIPSERVE_PORT=8000 \
    CLIPSERVE_GRPC_PORT=50051 \
    CLIPSERVE_MODEL_DIR=/models \
    CLIPSERVE_DEVICE=cpu
USER 10001:10001
EXPOSE 8000 50051
# Healthy means ready (models loaded and warm); python's urllib, so no curl in the image.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CLIPSERVE_PORT', '8000'), timeout=4)"]
# Exec form: the server is PID 1 and gets SIGTERM itself (it drains in-flight work, then exits).
ENTRYPOINT ["clipserve"]
CMD ["serve"]

