"""Reduced copies of the shipped configs for CPU tests on the toy COCO data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
