#!/usr/bin/env bash
# Build clipserve's container images with podman, here or on any Debian-like machine; safe to re-run.
#
#   scripts/build_images.sh                  # clipserve:cpu-onnx (the slim CPU image, ONNX Runtime, no torch)
#   scripts/build_images.sh cpu-onnx prometheus
#
# Variants: cpu-onnx (default), cpu (with PyTorch: needs PyTorch's CPU wheel index), prometheus (a
# Prometheus image for docker-compose.yml, from Debian's package, where prom/prometheus cannot be pulled).
#
# Steps, each timed:
#  1. podman: installed from Debian's packages where missing (root and apt-get needed), and configured
#     (/etc/containers/containers.conf) where runs would fail: ulimits no higher than the host's, runc.
#  2. Base images: the official ones (python:3.12-slim-bookworm) when they can be pulled; otherwise local
#     stand-ins, made once and cached by tag: a Debian bookworm minbase made with debootstrap from the
#     mirror apt uses, imported as localhost/debian-bookworm:base, and localhost/python-standin:3.11-bookworm
#     (deploy/images/python.Dockerfile: Debian's own Python 3.11).
#  3. The demo model's ONNX graphs, exported with this machine's torch (PYTHON, default .venv/bin/python,
#     else python3; the server's own on-demand export, cached) into a copy of the build context, so the
#     image starts without exporting and the build needs no torch. Without torch here, the build exports
#     them itself (it then needs PyTorch's CPU wheel index).
#  4. podman build of each variant (Docker format, which keeps HEALTHCHECK), with the host's CA bundle
#     and a pip.conf naming it mounted, so that pip reaches PyPI from inside the build.
# Then each image's size is printed.
#
# Environment: PYTHON_IMAGE (a base image to use as is), PYTHON (a python with the torch extra, for the
# export), CLIPSERVE_IMAGE_PREFIX (default clipserve), DEBIAN_MIRROR.
# Exit status: 0 built; 1 a build failed; 3 podman cannot be had or cannot run containers here.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${CLIPSERVE_IMAGE_PREFIX:-clipserve}
OFFICIAL_PYTHON=python:3.12-slim-bookworm
DEBIAN_BASE=localhost/debian-bookworm:base
PYTHON_STANDIN=localhost/python-standin:3.11-bookworm
PROMETHEUS_IMAGE=localhost/prometheus-debian:bookworm
VARIANTS=("$@")
[ "${#VARIANTS[@]}" -gt 0 ] || VARIANTS=(cpu-onnx)

log() { printf '[build_images] %s\n' "$*" >&2; }

# Runs "$@" as one named step and prints how long it took.
step() {
  local name=$1 start=$SECONDS
  shift
  log "step: $name"
  "$@"
  log "step: $name: $((SECONDS - start)) s"
}

ensure_podman() {
  if ! command -v podman >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      log "podman is not installed, and it cannot be installed here (needs root and apt-get)"
      exit 3
    fi
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc) >&2 \
      || { log "podman could not be installed with apt-get"; exit 3; }
  fi
  configure_podman
}

# Machines of this kind drop CAP_SYS_RESOURCE, so podman's default ulimits (above the host's) fail every
# run ("setrlimit RLIMIT_NOFILE: Operation not permitted"), and crun rejects their hybrid cgroup layout:
# runc works. Written only where no containers.conf exists (an existing one is the admin's).
configure_podman() {
  local conf=/etc/containers/containers.conf
  if [ "$(id -u)" = 0 ] && [ ! -e "$conf" ]; then
    if ! command -v runc >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq runc >&2 || true
    fi
    mkdir -p /etc/containers
    {
      echo '# Written by clipserve scripts/build_images.sh (see docs/deploy.md).'
      echo '[containers]'
      echo "default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", \"nproc=32768:32768\"]"
      if command -v runc >/dev/null 2>&1; then printf '[engine]\nruntime = "runc"\n'; fi
    } > "$conf"
    log "wrote $conf"
  fi
  podman info >/dev/null 2>&1 || { log "podman is installed but does not work here: $(podman info 2>&1 | tail -1)"; exit 3; }
}

debian_mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local found
  found=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -1 || true)
  [ -n "$found" ] || found=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${found:-http://deb.debian.org/debian}"
}

make_debian_base() {
  podman image exists "$DEBIAN_BASE" && { log "$DEBIAN_BASE: cached"; return; }
  if ! command -v debootstrap >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  fi
  local work
  work=$(mktemp -d)
  # shellcheck disable=SC2064  # expand now: the trap must remove this very folder
  trap "rm -rf '$work'; trap - RETURN" RETURN
  debootstrap --variant=minbase bookworm "$work/rootfs" "$(debian_mirror)" >&2
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$DEBIAN_BASE" >&2
}

# The Python base image to build from: PYTHON_IMAGE, else the official image (present or pulled), else
# the stand-in (made once).
python_base() {
  if [ -n "${PYTHON_IMAGE:-}" ]; then echo "$PYTHON_IMAGE"; return; fi
  if podman image exists "$OFFICIAL_PYTHON"; then echo "$OFFICIAL_PYTHON"; return; fi
  if ! podman image exists "$PYTHON_STANDIN" && podman pull -q "docker.io/library/$OFFICIAL_PYTHON" >&2 2>/dev/null; then
    echo "$OFFICIAL_PYTHON"; return
  fi
  echo "$PYTHON_STANDIN"
}

make_python_standin() {
  podman image exists "$PYTHON_STANDIN" && { log "$PYTHON_STANDIN: cached"; return; }
  log "$OFFICIAL_PYTHON cannot be pulled: making the stand-in $PYTHON_STANDIN"
  make_debian_base
  podman build -q --format docker --build-arg "BASE_IMAGE=$DEBIAN_BASE" -t "$PYTHON_STANDIN" \
    -f "$ROOT/deploy/images/python.Dockerfile" "$ROOT/deploy/images" >&2
}

# A copy of the build context (what .dockerignore allows in) with the demo model's ONNX graphs, so the
# repository's models/clipserve-demo stays as it is (its tests serve the demo from their own export).
make_context() {
  CONTEXT=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$CONTEXT'" EXIT
  local path
  local paths=()
  while read -r path; do [ ! -e "$ROOT/$path" ] || paths+=("$path"); done \
    < <(sed -n 's#^!\(.*\)#\1#p' "$ROOT/.dockerignore" | sed 's#/$##')
  tar -C "$ROOT" -c --exclude=__pycache__ --exclude='*.py[cod]' --exclude='*.egg-info' \
    --exclude='models/*/onnx' "${paths[@]}" | tar -x -C "$CONTEXT"
  cp "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$CONTEXT/"
  local python=${PYTHON:-}
  [ -n "$python" ] || { [ -x "$ROOT/.venv/bin/python" ] && python=$ROOT/.venv/bin/python; } || python=python3
  if PYTHONPATH="$ROOT" "$python" -c 'import importlib.util as u, sys; sys.exit(not all(map(u.find_spec, ("torch", "open_clip", "onnx"))))' 2>/dev/null; then
    PYTHONPATH="$ROOT" "$python" - "$CONTEXT/models" <<'EOF' >&2
import shutil
import sys
from pathlib import Path

from service.clip.model_config import resolve_model
from service.config import Settings
from service.runtime.onnx_cache import ensure_onnx

# The server's own on-demand export (service/runtime/onnx_cache.py), cached by a hash of the weights,
# architecture and preprocessing: later builds reuse it instead of exporting again.
models = Path(sys.argv[1])
demo = resolve_model("clipserve-demo", models)
served = ensure_onnx(demo, Settings(model_dir=models, backend="onnx"))
assert demo.onnx is not None and served.onnx is not None
source, target = served.resolve(served.onnx.image).parent, demo.resolve(demo.onnx.image).parent
if source != target:
    shutil.copytree(source, target, dirs_exist_ok=True)
print(f"demo ONNX graphs: {sorted(p.name for p in target.iterdir())}, from {source}")
EOF
  else
    log "no torch in $python: the build exports the demo's ONNX graphs itself (it needs PyTorch's CPU index)"
  fi
}

build_variant() {
  local variant=$1 base=$2 conf
  conf=$(mktemp)
  printf '[global]\ncert = /etc/ssl/host-ca.crt\n' > "$conf"
  local args=(build --format docker --layers -t "$PREFIX:$variant" --build-arg "PYTHON_IMAGE=$base"
              -v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/host-ca.crt:ro -v "$conf:/etc/pip.conf:ro")
  case $variant in
    cpu-onnx) args+=(--target cpu --build-arg WITH_TORCH=0 -f "$CONTEXT/Dockerfile" "$CONTEXT") ;;
    cpu) args+=(--target cpu --build-arg WITH_TORCH=1 -f "$CONTEXT/Dockerfile" "$CONTEXT") ;;
    prometheus) make_debian_base  # also where the Python base is the official image
                args=(build --format docker -t "$PROMETHEUS_IMAGE" --build-arg "BASE_IMAGE=$DEBIAN_BASE"
                      -f "$ROOT/deploy/images/prometheus.Dockerfile" "$ROOT/deploy/images") ;;
    *) log "unknown variant: $variant (cpu-onnx, cpu, prometheus)"; rm -f "$conf"; exit 2 ;;
  esac
  local rc=0
  podman "${args[@]}" >&2 || rc=$?
  rm -f "$conf"
  return "$rc"
}

image_name() {
  case $1 in prometheus) echo "$PROMETHEUS_IMAGE" ;; *) echo "localhost/$PREFIX:$1" ;; esac
}

main() {
  local total=$SECONDS base="" variant needs_python=0
  step "podman" ensure_podman
  for variant in "${VARIANTS[@]}"; do [ "$variant" = prometheus ] || needs_python=1; done
  if [ "$needs_python" = 1 ]; then
    base=$(python_base)
    [ "$base" != "$PYTHON_STANDIN" ] || step "stand-in base images" make_python_standin
    log "python base image: $base"
    step "build context + demo ONNX export" make_context
  else
    step "Debian base image" make_debian_base
  fi
  for variant in "${VARIANTS[@]}"; do
    step "build $(image_name "$variant")" build_variant "$variant" "$base"
  done
  for variant in "${VARIANTS[@]}"; do
    podman image inspect --format "image $(image_name "$variant"): {{.Size}} bytes" "$(image_name "$variant")" \
      | awk '{printf "%s %s %.0f MB (%s bytes)\n", $1, $2, $3 / 1e6, $3}'
  done
  log "done in $((SECONDS - total)) s"
}

main
