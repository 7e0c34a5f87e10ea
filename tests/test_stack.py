"""The real OpenMMLab stack is installed and works on CPU (no mocks)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch


def _mim_config(package: str, relative: str) -> str:
    root = Path(importlib.import_module(package).__file__).parent / ".mim" / "configs"
    path = root / relative
    assert path.is_file(), f"{package} does not ship {relative}"
    return str(path)


def test_mmcv_ops_are_compiled_and_run_on_cpu():
    from mmcv.ops import RoIAlign, nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feats = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = RoIAlign((1, 1), spatial_scale=1.0, sampling_ratio=1, aligned=False)(
        feats, torch.tensor([[0.0, 0.0, 0.0, 3.0, 3.0]])
    )
    assert pooled.shape == (1, 1, 1, 1) and torch.isfinite(pooled).all()


def test_stock_mask_rcnn_builds_and_predicts_on_cpu():
    from mmdet.apis import inference_detector, init_detector

    config = _mim_config("mmdet", "mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py")
    model = init_detector(config, checkpoint=None, device="cpu")
    assert type(model).__name__ == "MaskRCNN"
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    result = inference_detector(model, image)
    assert result.pred_instances.bboxes.shape[-1] == 4


@pytest.mark.slow
def test_stock_upernet_builds_and_predicts_on_cpu():
    from mmengine.model import revert_sync_batchnorm
    from mmseg.apis import inference_model, init_model

    config = _mim_config("mmseg", "upernet/upernet_r50_4xb4-80k_ade20k-512x512.py")
    model = revert_sync_batchnorm(init_model(config, checkpoint=None, device="cpu"))
    assert type(model.decode_head).__name__ == "UPerHead"
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape[-2:] == (64, 96)


def test_our_mask2former_adapter_imports_beside_upstream_mask2former(tmp_path, monkeypatch):
    """Upstream Mask2Former's package is `mask2former`; ours is `nattk.mask2former`."""
    upstream = tmp_path / "mask2former"
    upstream.mkdir()
    (upstream / "__init__.py").write_text("UPSTREAM = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "mask2former" or m.startswith("mask2former.")]:
        monkeypatch.delitem(sys.modules, name)
    ours = importlib.import_module("nattk.mask2former")
    theirs = importlib.import_module("mask2former")
    assert theirs.UPSTREAM is True
    assert ours.__name__ == "nattk.mask2former" and ours is not theirs


def test_collect_env_reports_ops_and_backends():
    from nattk import collect_env

    info = collect_env.collect()
    assert info["mmcv ops"].startswith("loadable")
    assert info["mmdet"] == "3.3.0" and info["mmseg"] == "1.2.2"
    assert "torch" in info["NA backends (cpu)"]


@pytest.mark.parametrize("package", ["nattk.backbones", "nattk.backbones.attention"])
def test_core_imports_torch_only(package):
    """backbones/ must not depend on mmcv/mmdet/mmseg/detectron2."""
    root = Path(importlib.import_module(package).__file__).parent
    for source in root.rglob("*.py"):
        text = source.read_text()
        for framework in ("mmcv", "mmdet", "mmseg", "mmengine", "detectron2"):
            assert f"import {framework}" not in text and f"from {framework}" not in text, (
                source,
                framework,
            )
