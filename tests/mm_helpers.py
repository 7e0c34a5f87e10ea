"""Reduced copies of the shipped configs for CPU tests on the toy COCO data."""

from __future__ import annotations

import contextlib
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from nattk.quickstart.toy_data import toy_metainfo

REPO = Path(__file__).resolve().parents[1]
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


def fast_tier_only(paths, *keys: str) -> list:
    """``paths`` as test parameters, those whose name contains none of ``keys`` marked slow.

    Building a full-size published model takes a second or more: the fast tier
    (``-m "not slow"``) builds a few representative configs, the full suite all of them.
    """
    return [
        p if any(k in p.name for k in keys) else pytest.param(p, marks=pytest.mark.slow)
        for p in paths
    ]


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


def reduced_detection_config(path: Path, data_root: Path, out: Path) -> Path:
    """A CPU-sized copy of a shipped config: toy backbone, small images, the toy data."""
    cfg = Config.fromfile(path)
    tiny_backbone(cfg)
    set_num_classes(cfg.model, 2)
    # Fewer proposals and RoIs, thinner head convs: the heads dominate CPU time otherwise.
    cfg.model.train_cfg.rpn_proposal.max_per_img = 200
    cfg.model.test_cfg.rpn.max_per_img = 100
    rcnn = cfg.model.train_cfg.rcnn
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        stage.sampler.num = 64
    heads = cfg.model.roi_head.bbox_head
    for head in heads if isinstance(heads, list) else [heads]:
        head.fc_out_channels = 256
        head.conv_out_channels = 64
    masks = cfg.model.roi_head.mask_head
    for head in masks if isinstance(masks, list) else [masks]:
        head.conv_out_channels = 32
    # MMEngine's AmpOptimWrapper refuses to build without a GPU; test_mixed_precision.py
    # runs this detector under CPU autocast the way AmpOptimWrapper runs it on a GPU.
    cfg.optim_wrapper.type = "OptimWrapper"
    cfg.optim_wrapper.pop("loss_scale", None)
    scales = [(96, 160), (128, 160)]
    pipeline = cfg.train_dataloader.dataset.pipeline
    choice = pipeline[3]
    assert choice.type == "RandomChoice"
    choice.transforms[0][0].scales = scales
    choice.transforms[1][0].scales = [(80, 160), (96, 160)]
    choice.transforms[1][1].crop_size = (64, 96)
    choice.transforms[1][2].scales = scales
    cfg.test_dataloader.dataset.pipeline[1].scale = (160, 128)
    for split, loader in (("train2017", "train_dataloader"), ("val2017", "val_dataloader")):
        dataset = cfg[loader].dataset
        dataset.update(
            data_root=str(data_root) + "/",
            ann_file=f"annotations/instances_{split}.json",
            data_prefix=dict(img=f"{split}/"),
            metainfo=toy_metainfo(),
        )
        if loader == "val_dataloader":
            dataset.pipeline = cfg.test_dataloader.dataset.pipeline
        cfg[loader].update(num_workers=0, persistent_workers=False, batch_size=2)
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator.ann_file = str(data_root / "annotations" / "instances_val2017.json")
    cfg.test_evaluator = cfg.val_evaluator
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.dump(out)
    return out


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
