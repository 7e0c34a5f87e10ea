"""The OpenMMLab Mask2Former recipes against Mask2Former's Detectron2 code (issue 17).

Each test resolves the shipped configs and builds what the framework really builds
(optimiser wrapper, pipeline transforms, TTA model, fusion head), then checks the value
the published runs used.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mm_helpers import REPO, tiny_backbone
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

pytest.importorskip("mmdet")
pytest.importorskip("mmseg")

from mmdet.registry import MODELS as DET_MODELS  # noqa: E402
from mmdet.registry import TRANSFORMS as DET_TRANSFORMS  # noqa: E402
from mmdet.structures.bbox import HorizontalBoxes  # noqa: E402
from mmdet.structures.mask import BitmapMasks  # noqa: E402
from mmseg.registry import MODELS as SEG_MODELS  # noqa: E402
from mmseg.registry import TRANSFORMS as SEG_TRANSFORMS  # noqa: E402
from mmseg.structures import SegDataSample  # noqa: E402

import nattk.detection  # noqa: E402,F401  (registers the toolkit's modules)
import nattk.segmentation  # noqa: E402,F401

MMDET_M2F = sorted((REPO / "configs" / "mmdet" / "mask2former").glob("*.py"))
MMSEG_M2F = sorted((REPO / "configs" / "mmseg" / "mask2former").glob("*.py"))
PANOPTIC = [p for p in MMDET_M2F if "panoptic" in p.name]
ADE_CITYSCAPES = [p for p in MMDET_M2F if "ade20k" in p.name or "cityscapes" in p.name]
# Upstream keeps empty targets in every mapper but COCO instance (filter_empty_instances).
KEEP_EMPTY = [p for p in MMDET_M2F if not p.name.endswith("_coco.py")]
ids = lambda p: p.stem.split("8xb2-")[-1]  # noqa: E731


# ----------------------------------------------------------------------- 1. optimiser
# Mask2Former's build_optimizer, written out per parameter name for these models: norm
# layers (the backbone's included) and the decoder's query/level nn.Embeddings get no
# decay; everything else, the rpb tables and the pixel decoder's level embedding (a
# plain nn.Parameter upstream) included, gets 0.05; the backbone learns at lr x0.1.
NORM_PARAM = re.compile(r"(^|\.)(norm\d?|norms\.\d+|post_norm|gn)\.(weight|bias)$")
EMBEDDINGS = ("query_embed.weight", "query_feat.weight", "level_embed.weight")


def _tiny_model_and_optimizer(path: Path):
    cfg = Config.fromfile(path)
    widths = tiny_backbone(cfg)
    scope = "mmdet" if "/mmdet/" in str(path) else "mmseg"
    head = cfg.model.panoptic_head if scope == "mmdet" else cfg.model.decode_head
    head.in_channels = widths
    init_default_scope(scope)
    model = (DET_MODELS if scope == "mmdet" else SEG_MODELS).build(cfg.model)
    return cfg, model, build_optim_wrapper(model, cfg.optim_wrapper)


@pytest.mark.parametrize("path", MMDET_M2F + MMSEG_M2F, ids=lambda p: p.parent.parent.name + ids(p))
def test_param_groups_follow_detectron2_rule(path):
    cfg, model, wrapper = _tiny_model_and_optimizer(path)
    base_lr, base_wd = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
    assert (base_lr, base_wd) == (1e-4, 0.05)
    name_of = {id(p): n for n, p in model.named_parameters()}
    settings = {}
    for group in wrapper.optimizer.param_groups:
        for param in group["params"]:
            assert name_of[id(param)] not in settings, "parameter in two groups"
            settings[name_of[id(param)]] = (group["lr"], group["weight_decay"])
    assert set(settings) == {n for n, p in model.named_parameters() if p.requires_grad}

    checked = {"backbone_norm": 0, "rpb": 0, "embedding": 0}
    for name, (lr, decay) in settings.items():
        in_backbone = name.startswith("backbone.")
        assert lr == pytest.approx(base_lr * (0.1 if in_backbone else 1.0)), name
        no_decay = bool(NORM_PARAM.search(name)) or name.endswith(EMBEDDINGS)
        assert decay == (0.0 if no_decay else base_wd), name
        checked["backbone_norm"] += in_backbone and no_decay
        checked["rpb"] += name.endswith(".rpb")
        checked["embedding"] += name.endswith(EMBEDDINGS)
    assert checked["backbone_norm"] > 0 and checked["rpb"] > 0 and checked["embedding"] == 3
    level_encoding = [n for n in settings if n.endswith("pixel_decoder.level_encoding.weight")]
    assert level_encoding and all(settings[n][1] == base_wd for n in level_encoding)


def test_constructor_refuses_mmengine_paramwise_keys():
    cfg = Config.fromfile(MMSEG_M2F[0])
    cfg.optim_wrapper.paramwise_cfg["norm_decay_mult"] = 0.0
    with pytest.raises(KeyError, match="norm_decay_mult"):
        build_optim_wrapper(torch.nn.Linear(2, 2), cfg.optim_wrapper)


# ------------------------------------------------------------------ 2. mmseg crop limit
@pytest.mark.parametrize("path", MMSEG_M2F, ids=ids)
def test_mmseg_crop_has_no_single_category_limit(path):
    cfg = Config.fromfile(path)
    init_default_scope("mmseg")
    pipeline = [SEG_TRANSFORMS.build(t) for t in cfg.train_dataloader.dataset.pipeline]
    crops = [t for t in pipeline if type(t).__name__ == "RandomCrop"]
    assert len(crops) == 1 and crops[0].cat_max_ratio == 1.0  # SINGLE_CATEGORY_MAX_AREA
    # A crop that one category fills entirely is accepted at once (0.75 would re-draw).
    results = dict(
        img=np.zeros((700, 1100, 3), np.uint8), gt_seg_map=np.ones((700, 1100), np.uint8)
    )
    results["seg_fields"] = ["gt_seg_map"]
    assert crops[0].transform(results)["gt_seg_map"].shape == tuple(crops[0].crop_size)


# ------------------------------------------------------------------ 3. colour augmentation
def _built_train_pipeline(path):
    init_default_scope("mmdet")
    return [
        DET_TRANSFORMS.build(t) for t in Config.fromfile(path).train_dataloader.dataset.pipeline
    ]


@pytest.mark.parametrize("path", ADE_CITYSCAPES, ids=ids)
def test_mmdet_configs_use_detectron2_colour_augmentation(path):
    names = [type(t).__name__ for t in _built_train_pipeline(path)]
    assert "ColorAugSSD" in names and "PhotoMetricDistortion" not in names
    # upstream order: resize, crop, colour, flip
    assert names.index("ColorAugSSD") > max(i for i, n in enumerate(names) if "Crop" in n)


def _hue(img_bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img_bgr, cv2.COLOR_BGR2HSV)[..., 0].astype(np.int64)


def _hue_shifts(transform, trials: int = 300) -> np.ndarray:
    """Largest per-image hue change (OpenCV units, circular) over random applications."""
    np.random.seed(0)  # noqa: NPY002  (the transforms draw from NumPy's global state)
    shifts = []
    for _ in range(trials):
        img = np.zeros((4, 4, 3), np.uint8)
        img[..., 2] = 120  # pure red (hue 0): brightness and contrast leave its hue alone
        before = _hue(img)
        out = transform.transform(dict(img=img.astype(np.float32), img_shape=(4, 4)))["img"]
        diff = np.abs(_hue(np.clip(out, 0, 255).astype(np.uint8)) - before)
        shifts.append(np.minimum(diff, 180 - diff).max())
    return np.array(shifts)


def test_colour_augmentation_hue_range_and_no_channel_swap():
    ours = DET_TRANSFORMS.build(dict(type="ColorAugSSD"))
    shifts = _hue_shifts(ours)
    # hue +-18 OpenCV units (+1 for the HSV round trip), beyond MMDetection's +-9 units
    assert shifts.max() <= 19 and shifts.max() > 10
    # Negative control: MMDetection's PhotoMetricDistortion swaps channels (red -> blue
    # or green is a 60-120 unit hue jump), which the same check catches.
    theirs = DET_TRANSFORMS.build(dict(type="PhotoMetricDistortion"))
    assert _hue_shifts(theirs).max() >= 50


def test_colour_augmentation_clips_between_steps():
    img = np.full((2, 2, 3), 250, np.uint8)
    params = dict(contrast_first=True, brightness=30.0, contrast=0.5, saturation=None, hue=None)
    out = DET_TRANSFORMS.get("ColorAugSSD").apply(img, params)
    assert out.dtype == np.uint8
    assert (out == 127).all()  # min(250 + 30, 255) * 0.5; without the clip it would be 140
    params.update(brightness=None, contrast=None, hue=18)
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 2] = 255
    shifted = DET_TRANSFORMS.get("ColorAugSSD").apply(red, params)
    assert (_hue(shifted) == 18).all()  # OpenCV's 0-180 hue scale: 36 degrees


@pytest.mark.parametrize("path", [p for p in ADE_CITYSCAPES if "cityscapes" in p.name], ids=ids)
def test_cityscapes_crop_is_512_high_and_1024_wide(path):
    """CROP.SIZE (512, 1024) is (h, w); MMDetection's RandomCrop takes (w, h)."""
    cfg = Config.fromfile(path)
    crop = next(t for t in _built_train_pipeline(path) if "Crop" in type(t).__name__)
    assert crop._get_crop_size((1024, 2048)) == (512, 1024)
    assert tuple(cfg.model.data_preprocessor.batch_augments[0].size) == (512, 1024)  # (h, w)


# ------------------------------------------------------------------ 4. empty instances
def test_coco_instance_filters_empty_instances_as_upstream():
    coco = next(p for p in MMDET_M2F if p.name.endswith("_coco.py"))
    assert "FilterAnnotations" in [type(t).__name__ for t in _built_train_pipeline(coco)]


@pytest.mark.parametrize("path", KEEP_EMPTY, ids=ids)
def test_crop_keeps_instances_outside_the_crop(path):
    pipeline = _built_train_pipeline(path)
    names = [type(t).__name__ for t in pipeline]
    assert "FilterAnnotations" not in names and "RandomCropKeepEmpty" in names
    crop = next(t for t in pipeline if "Crop" in type(t).__name__)
    height, width = crop._get_crop_size((10**4, 10**4))  # (h, w) of an absolute crop
    masks = np.zeros((2, 2 * height, 2 * width), np.uint8)
    masks[0, :height, :width] = 1  # fills the top-left quarter
    masks[1, -10:, -10:] = 1  # bottom-right corner
    results = dict(
        img=np.zeros((2 * height, 2 * width, 3), np.uint8),
        gt_bboxes=HorizontalBoxes(
            torch.tensor(
                [[0, 0, width, height], [2 * width - 10] * 2 + [2 * width] * 2], dtype=torch.float32
            )
        ),
        gt_bboxes_labels=np.array([3, 5]),
        gt_ignore_flags=np.array([False, False]),
        gt_masks=BitmapMasks(masks, 2 * height, 2 * width),
    )
    crop._rand_offset = lambda margin: (0, 0)  # the top-left crop: misses instance 1
    out = crop.transform(results)
    assert len(out["gt_masks"]) == 2 and out["gt_bboxes_labels"].tolist() == [3, 5]
    assert out["gt_masks"].masks[0].all() and not out["gt_masks"].masks[1].any()
    assert out["gt_bboxes"].tensor[1].tolist() == [0, 0, 0, 0]


# ------------------------------------------------------------------ 5. evaluation coverage
@pytest.mark.parametrize("path", PANOPTIC, ids=ids)
def test_panoptic_configs_evaluate_pq_ap_and_miou(path):
    cfg = Config.fromfile(path)
    types = {e.type for e in cfg.val_evaluator}
    assert types & {"CocoPanopticMetric", "CityscapesPanopticMetric"}
    assert types & {"CocoMetric", "CityScapesMetric"}
    assert "SemSegMetric" in types and cfg.test_evaluator == cfg.val_evaluator
    test_cfg = cfg.model.test_cfg
    assert test_cfg.panoptic_on and test_cfg.instance_on and test_cfg.semantic_on


@pytest.mark.parametrize("path", [p for p in MMDET_M2F if "panoptic" not in p.name], ids=ids)
def test_instance_configs_do_not_compute_semantic_output(path):
    assert Config.fromfile(path).model.test_cfg.semantic_on is False


def test_fusion_head_semantic_output_is_upstream_semantic_inference():
    init_default_scope("mmdet")
    head = DET_MODELS.build(
        dict(
            type="MaskFormerFusionHeadWithSemSeg",
            num_things_classes=2,
            num_stuff_classes=1,
            test_cfg=dict(panoptic_on=False, instance_on=False, semantic_on=True),
        )
    )
    from mmdet.structures import DetDataSample

    sample = DetDataSample(
        metainfo=dict(img_shape=(6, 8), ori_shape=(12, 16), batch_input_shape=(8, 8))
    )
    # Two queries: q0 says class 0 everywhere with a weak mask, q1 class 2 with a strong
    # mask on the left half only.
    cls = torch.tensor([[[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 4.0, 0.0]]])
    masks = torch.full((1, 2, 8, 8), -10.0)
    masks[0, 0] = 0.5
    masks[0, 1, :, :4] = 6.0
    result = head.predict(cls, masks, [sample], rescale=True)[0]
    labels = result["sem_results"].sem_seg[0]
    assert labels.shape == (12, 16)  # cropped to img_shape, resized to ori_shape
    assert (labels[:, :7] == 2).all() and (labels[:, 9:] == 0).all()


# ------------------------------------------------------------------ 6. TTA merge
class _Segmentor(torch.nn.Module):
    """Stands in for the wrapped segmentor: merge_preds only reads the predictions."""

    out_channels = 3

    def test_step(self, data):
        raise AssertionError("not called by merge_preds")


@pytest.mark.parametrize("path", MMSEG_M2F, ids=ids)
def test_tta_averages_mask2former_scores_without_softmax(path):
    cfg = Config.fromfile(path)
    init_default_scope("mmseg")
    tta = SEG_MODELS.build(dict(cfg.tta_model, module=_Segmentor()))
    # Per-pixel class scores of two augmentations: the raw mean picks class 2 (0.45), a
    # softmax-then-mean picks class 0.
    scores = [torch.tensor([0.6, 0.0, 0.1]), torch.tensor([0.2, 0.8, 0.8])]
    samples = []
    for score in scores:
        sample = SegDataSample(metainfo=dict(img_path="x.png"))
        sample.seg_logits = PixelData(data=score[:, None, None].expand(3, 2, 2).clone())
        samples.append(sample)
    merged = tta.merge_preds([samples])[0]
    assert (merged.pred_sem_seg.data == 2).all()
    assert torch.allclose(merged.seg_logits.data[:, 0, 0], torch.tensor([0.4, 0.4, 0.45]))
