"""Reduced copies of the shipped configs for CPU tests on the toy COCO data."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import torch
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "tools") not in sys.path:  # the tools are scripts, imported by the tests
    sys.path.insert(0, str(REPO / "tools"))
TINY_BACKBONE = dict(
    arch=None,
    embed_dim=32,
    depths=[1, 1, 2, 1],
    num_heads=[1, 2, 4, 8],
    mlp_ratio=2.0,
    layer_scale=None,
    drop_path_rate=0.1,
    init_cfg=None,
)
TINY_DILATIONS = [[1], [2], [1, 2], [1]]


def set_num_classes(node, num_classes: int) -> None:
    """Sets every ``num_classes`` found in a config tree."""
    if isinstance(node, dict):
        for key in node:
            if key == "num_classes":
                node[key] = num_classes
            else:
                set_num_classes(node[key], num_classes)
    elif isinstance(node, (list, tuple)):
        for item in node:
            set_num_classes(item, num_classes)


def tiny_backbone(cfg: Config) -> list[int]:
    """Swaps the published variant for a 4-level toy one of the same type.

    Returns:
        The channels of the four outputs.
    """
    backbone = cfg.model.backbone
    backbone.update(TINY_BACKBONE)
    backbone.pop("arch")
    if backbone.type != "NAT":
        backbone.dilations = TINY_DILATIONS
    widths = [32 * 2**i for i in range(4)]
    if "neck" in cfg.model:
        cfg.model.neck.in_channels = widths
    return widths


def run_tool(script: str, *args: str, timeout: int = 900) -> str:
    """Runs ``tools/<script>`` in a fresh interpreter; returns its output, raises on failure."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(
            f"{script} {' '.join(args)} failed ({proc.returncode}):\n{output[-6000:]}"
        )
    return output


# mmcv CPU ops that refuse half precision, with the positions of the arguments they
# write their results into.
MMCV_HALF_REFUSING_OPS = {
    "nms": (),
    "roi_align_forward": (2, 3, 4),  # output, argmax_y, argmax_x
    "roi_align_backward": (4,),  # grad_input
}


@contextlib.contextmanager
def mmcv_cpu_ops_take_half():
    """Lets mmcv's compiled CPU NMS and RoIAlign take fp16/bf16 tensors, as their CUDA kernels do.

    Under CUDA autocast, MMDetection feeds half-precision features and boxes to
    mmcv's CUDA NMS and RoIAlign, which accept them. mmcv's CPU kernels of the same
    ops refuse anything but fp32 (mmcv's CPU limit, not the toolkit's). Inside this
    context each of them computes in fp32 and writes its results back in the
    caller's dtypes, so a CPU autocast run takes the same path as a GPU AMP run.
    """
    ext = importlib.import_module("mmcv._ext")
    originals = {name: getattr(ext, name) for name in MMCV_HALF_REFUSING_OPS}

    def half_to_fp32(fn, outputs):
        def wrapped(*args, **kwargs):
            low = (torch.float16, torch.bfloat16)
            copies = [a.float() if torch.is_tensor(a) and a.dtype in low else a for a in args]
            result = fn(*copies, **kwargs)
            for i in outputs:
                if copies[i] is not args[i]:
                    args[i].copy_(copies[i])
            return result

        return wrapped

    for name, fn in originals.items():
        setattr(ext, name, half_to_fp32(fn, MMCV_HALF_REFUSING_OPS[name]))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(ext, name, fn)
