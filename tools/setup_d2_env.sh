#!/usr/bin/env bash
# Create .venv-d2: Detectron2 + Mask2Former + OneFormer with this toolkit. Idempotent.
#
# A second environment, because Detectron2 needs torchvision, which has no build for the
# CPU torch 2.13 wheel of .venv: torch 2.14.1 + torchvision 0.29.1 (CUDA builds, which
# also run on a CPU). detectron2 is built from source once per machine and its wheel kept
# outside the repository, keyed by detectron2 revision and torch version. Mask2Former and
# OneFormer are used from their checkouts, never installed or edited.
#
# Upstream sources, for each the first that exists (one log line says which;
# nattk/dev/upstream_sources.py): $DETECTRON2_SRC / $MASK2FORMER_ROOT / $ONEFORMER_ROOT,
# sibling clones ../detectron2 ../Mask2Former ../OneFormer, the snapshots in
# ../shared/vendor (sha256 checked), a git clone of the pinned commits. Snapshots and
# clones are unpacked into $NATTK_CACHE_DIR/upstream. The launchers find the checkouts
# this environment was made with (<venv>/nattk-upstream.json).
#
# Exit status: 0 ready; 3 some upstream source was found nowhere (the lines say how to
# provide it); anything else, an error.
#
# Environment variables:
#   NATTK_D2_VENV    virtual environment to create/use (default: .venv-d2)
#   NATTK_PYTHON     interpreter used to create it (default: python3)
#   NATTK_CACHE_DIR  unpacked upstream sources (<dir>/upstream; default: ~/.cache/nat-toolkit)
#   NATTK_WHEEL_DIR  where built wheels are cached (default: $NATTK_CACHE_DIR/wheels)
#   NATTK_VENDOR_DIR snapshots folder (default: ../shared/vendor)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${NATTK_D2_VENV:-.venv-d2}"
PYTHON="${NATTK_PYTHON:-python3}"
CACHE_DIR="${NATTK_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nat-toolkit}"
export NATTK_CACHE_DIR="$CACHE_DIR"
CONSTRAINTS="$ROOT/requirements/constraints-d2.txt"
TORCH_PIN="$(grep -E '^torch==' "$CONSTRAINTS")"
TORCHVISION_PIN="$(grep -E '^torchvision==' "$CONSTRAINTS")"
# NumPy 2, installed last (see below); not a constraint, which would clash with
# panopticapi-lite's numpy<2 while the rest is resolved.
NUMPY_PIN="numpy>=2,<2.5"
RECORD="$VENV/nattk-upstream.json"
STAMP="$VENV/.nattk-d2-env-stamp"
START=$SECONDS

log() { printf '[setup_d2_env] %s\n' "$*"; }

# Resolves (and unpacks) the three upstream sources; writes $1 and logs one line each.
resolve_sources() {
    local status=0
    "$PYTHON" nattk/dev/upstream_sources.py --record "$1" || status=$?
    if [[ $status -eq 3 ]]; then
        log "Detectron2 environment not set up: upstream sources missing (above)"
    fi
    return $status
}

# What the environment depends on: these files, detectron2's revision and the checkout
# paths (an edit inside a Mask2Former/OneFormer checkout, used in place, needs nothing).
inputs_hash() {
    {
        cat pyproject.toml "$CONSTRAINTS" tools/setup_d2_env.sh nattk/dev/upstream_sources.py
        record_fields "$RECORD"
    } | sha256sum | cut -d' ' -f1
}

record_fields() {
    "$PYTHON" - "$1" <<'PY'
import json, sys
record = json.load(open(sys.argv[1]))
print(record["detectron2"]["revision"])
print(*(entry["path"] for entry in record.values()))
PY
}

env_imports() {
    "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import cv2, detectron2._C, einops, fvcore, timm, torchvision, wandb  # noqa: F401
import nattk.mask2former.backbone  # noqa: F401
from nattk.mask2former.upstream import MASK2FORMER, ONEFORMER, find_checkout
find_checkout(None, MASK2FORMER), find_checkout(None, ONEFORMER)
PY
}

mkdir -p "$VENV"
resolve_sources "$RECORD.new" || exit $?
mv "$RECORD.new" "$RECORD"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$(inputs_hash)" ]] && env_imports; then
    log "environment up to date ($VENV)"
    exit 0
fi
rm -f "$STAMP"

[[ -x "$VENV/bin/python" ]] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
export PIP_CONSTRAINT="$CONSTRAINTS"

log "installing $TORCH_PIN $TORCHVISION_PIN and build tools"
"${PIP[@]}" install -q "$TORCH_PIN" "$TORCHVISION_PIN" "setuptools<82" wheel ninja

D2_SRC="$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["detectron2"]["path"])' "$RECORD")"
D2_REV="$("$VENV/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["detectron2"]["revision"])' "$RECORD")"
# The wheel is specific to the revision, torch, the Python version and whether detectron2's
# setup.py compiles its CUDA kernels (a visible GPU with nvcc, or FORCE_CUDA=1).
D2_BUILD_TAG="$("$VENV/bin/python" - <<'PY'
import logging, os, sys
logging.disable(logging.WARNING)  # torch.utils.cpp_extension's "No CUDA runtime is found"
import torch
from torch.utils.cpp_extension import CUDA_HOME
cuda = (torch.cuda.is_available() and CUDA_HOME is not None) or os.environ.get("FORCE_CUDA") == "1"
print(f"cp{sys.version_info[0]}{sys.version_info[1]}-{'cuda' if cuda else 'cpu'}")
PY
)"
D2_WHEELS="${NATTK_WHEEL_DIR:-$CACHE_DIR/wheels}/detectron2/${D2_REV}-torch${TORCH_PIN#torch==}-${D2_BUILD_TAG}"
if ! ls "$D2_WHEELS"/detectron2-*.whl >/dev/null 2>&1; then
    log "building detectron2 ${D2_REV:0:12} into $D2_WHEELS (once per machine; 2-5 min on 2 cores)"
    mkdir -p "$(dirname "$D2_WHEELS")"
    staging="$(mktemp -d "$D2_WHEELS.XXXXXX")"
    trap 'rm -rf "$staging"' EXIT
    # No build isolation: detectron2's setup.py imports the torch it compiles against.
    MAX_JOBS="$(nproc)" "${PIP[@]}" wheel -q --no-build-isolation --no-deps -w "$staging" "$D2_SRC"
    # One rename: a failed build leaves no wheel behind. -T: never into an existing folder
    # (one left empty, or made meanwhile by another run, which is then kept).
    mv -T "$staging" "$D2_WHEELS" 2>/dev/null || rm -rf "$staging"
    trap - EXIT
fi
log "installing detectron2 from $D2_WHEELS"
"${PIP[@]}" install -q --force-reinstall --no-deps "$D2_WHEELS"/detectron2-*.whl
"${PIP[@]}" install -q "$D2_WHEELS"/detectron2-*.whl  # its dependencies, from the registry

# hf: transformers, for tests that load what its save_pretrained writes.
log "installing nat-toolkit[oneformer,hf] (editable) and pytest"
"${PIP[@]}" install -q --no-build-isolation -e ".[oneformer,hf]" "pytest>=8"
# OneFormer's dataset mapper uses np.bool, which NumPy 1.24-1.26 lack and NumPy 2 has;
# panopticapi-lite declares numpy<2 but runs with 2. A command of its own: asked for
# together, pip backtracks into old source releases (docs/oneformer.md).
numpy_log="$("${PIP[@]}" install -q "$NUMPY_PIN" 2>&1)" || { printf '%s\n' "$numpy_log"; exit 1; }
printf '%s\n' "$numpy_log" | grep -v "panopticapi-lite\|dependency resolver\|^$" || true

if ! env_imports; then
    log "ERROR: $VENV does not import detectron2, OneFormer's dependencies or nattk.mask2former"
    "$VENV/bin/python" -c "import detectron2._C, nattk.mask2former.backbone"
    exit 1
fi
inputs_hash >"$STAMP"
log "done in $((SECONDS - START)) s; activate with: source $VENV/bin/activate"
