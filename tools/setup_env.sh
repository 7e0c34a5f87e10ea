#!/usr/bin/env bash
# Create .venv and install the pinned NAT/DiNAT toolkit stack. Idempotent.
#
# The first run on a machine builds mmcv 2.1.0 with its compiled ops from source
# (25-40 minutes on 2 cores) and keeps the wheel in $NATTK_WHEEL_DIR, outside the
# repository, so that later runs and fresh clones on the same machine reuse it.
# A run whose inputs did not change since the last successful one only checks
# that the environment still imports, then returns (a few seconds).
#
# Environment variables:
#   NATTK_VENV       virtual environment to create/use (default: .venv)
#   NATTK_PYTHON     interpreter used to create it (default: python3)
#   NATTK_WHEEL_DIR  where built wheels are cached (default: ~/.cache/nat-toolkit/wheels)
#   NATTK_EXTRAS     extras of this package to install (default: mmdet,mmseg,natten,dev)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${NATTK_VENV:-.venv}"
PYTHON="${NATTK_PYTHON:-python3}"
EXTRAS="${NATTK_EXTRAS:-mmdet,mmseg,natten,dev}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
TORCH_PIN="$(grep -E '^torch==' "$CONSTRAINTS")"
WHEEL_DIR="${NATTK_WHEEL_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nat-toolkit/wheels}/${TORCH_PIN#torch==}"
STAMP="$VENV/.nattk-env-stamp"

log() { printf '[setup_env] %s\n' "$*"; }

inputs_hash() {
    cat pyproject.toml "$CONSTRAINTS" tools/setup_env.sh | sha256sum | cut -d' ' -f1
}

env_imports() {
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import mmcv.ops, mmdet.models, mmseg.models, nattk.backbones  # noqa: F401
PY
}

build_cpu_extension() {
    # Never fatal: without a working compiler the attention op falls back to
    # its pure-PyTorch backend (tools/collect_env.py reports which is active).
    "$VENV/bin/python" -c "from nattk.backbones.attention import cpu_extension as c; raise SystemExit(c.main())" || log "CPU extension not built; the 'torch' backend will be used"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" ]] && env_imports; then
    log "environment up to date ($VENV)"
    build_cpu_extension
    exit 0
fi

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$CONSTRAINTS"

log "installing torch and build tools"
"${PIP[@]}" install -q "$TORCH_PIN" "setuptools<82" wheel ninja numpy

if ! "$VENV/bin/python" -c "import mmcv.ops" >/dev/null 2>&1; then
    mkdir -p "$WHEEL_DIR"
    if ! ls "$WHEEL_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
        log "building mmcv 2.1.0 with ops into $WHEEL_DIR (once per machine; 25-40 min on 2 cores)"
        MMCV_WITH_OPS=1 MAX_JOBS="$(nproc)" "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
            -w "$WHEEL_DIR" mmcv==2.1.0
    fi
    log "installing mmcv from $WHEEL_DIR"
    "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-2.1.0-*.whl
fi

# natten ships an sdist only; its setup imports torch, so no build isolation.
if [[ ",$EXTRAS," == *",natten,"* ]]; then
    "${PIP[@]}" install -q --no-build-isolation natten==0.21.7
fi

# Triton for the fused GPU kernels' CPU checks (interpreter, ahead-of-time compile).
# --no-deps: nothing it could ask for may replace the pinned CPU torch.
if [[ ",$EXTRAS," == *",dev,"* ]]; then
    "${PIP[@]}" install -q --no-deps "$(grep -E '^triton==' "$CONSTRAINTS")"
fi

log "installing nat-toolkit[$EXTRAS] (editable)"
"${PIP[@]}" install -q --no-build-isolation --find-links "$WHEEL_DIR" -e ".[$EXTRAS]"

if ! env_imports; then
    log "ERROR: the environment does not import (mmcv.ops, mmdet.models, mmseg.models, nattk)"
    exit 1
fi
build_cpu_extension
inputs_hash >"$STAMP"
log "done; activate with: source $VENV/bin/activate"
