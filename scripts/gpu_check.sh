#!/usr/bin/env bash
# GPU check of the ONNX Runtime backend (docs/onnx.md): parity and throughput on the CUDA and TensorRT
# execution providers, fp32 and fp16, against torch on the same GPU; prints one table. Needs an NVIDIA GPU.
#
#   bash scripts/gpu_check.sh [benchmarks/gpu_check.py flags, e.g. --models clipserve-demo]
#
# Python: $PYTHON, else .venv/bin/python (made with --system-site-packages where missing, so a machine's
# own CUDA torch is used). Where onnxruntime has no CUDA provider, this installs pyproject's gpu extra
# (onnxruntime-gpu with its CUDA and cuDNN wheels) in place of the CPU onnxruntime (both own the same
# package folder, so the CPU one goes first); where TensorRT is missing, it tries tensorrt-cu13 (the
# TensorRT rows say "unavailable" if that fails). The checks stop starting new cells after BUDGET_S
# seconds (default 420) and the whole run is cut at 8 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! nvidia-smi -L; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi failed)" >&2
    exit 2
fi
if [ -z "${PYTHON:-}" ]; then
    [ -x .venv/bin/python ] || python3 -m venv --system-site-packages .venv
    PYTHON=.venv/bin/python
fi
pip_install() { "$PYTHON" -m pip install -q --disable-pip-version-check "$@"; }

if ! "$PYTHON" -c "import service.export, open_clip, onnx, onnxscript, fastapi" 2>/dev/null; then
    # the project without its torch pin: keep the machine's CUDA torch where there is one
    "$PYTHON" -c "import torch" 2>/dev/null || pip_install torch
    pip_install -e '.[server]' open_clip_torch onnx onnxscript
fi
if ! "$PYTHON" -c "import onnxruntime as o, sys; sys.exit('CUDAExecutionProvider' not in o.get_available_providers())"; then
    "$PYTHON" -m pip uninstall -y -q onnxruntime onnxruntime-gpu || true
    read -r -a gpu_extra <<< "$("$PYTHON" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['gpu']))")"
    pip_install "${gpu_extra[@]}"
fi
"$PYTHON" -c "import tensorrt" 2>/dev/null || pip_install "tensorrt-cu13>=10,<11" \
    || echo "gpu_check: TensorRT could not be installed; its rows will say unavailable" >&2

export PYTHONUNBUFFERED=1
timeout 480 "$PYTHON" benchmarks/gpu_check.py --budget-s "${BUDGET_S:-420}" "$@"
