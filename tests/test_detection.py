"""MMDetection adapter and configs: every config builds; reduced copies train, test, resume."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from mm_helpers import REPO, fast_tier_only, reduced_detection_config, run_tool
from mmengine.config import Config
from mmengine.registry import init_default_scope

from nattk.quickstart.toy_data import make_toy_coco

pytest.importorskip("mmdet")

from mmdet.registry import MODELS  # noqa: E402

import nattk.detection  # noqa: E402,F401  (registers NAT, DiNAT, DiNAT_s)

CONFIG_DIR = REPO / "configs" / "mmdet"
DETECTION_CONFIGS = sorted(
    p for p in CONFIG_DIR.glob("*/*.py") if p.parent.name in ("nat", "dinat", "dinat_s")
)
# nat_dinat.md §7.2, in millions.
PUBLISHED_PARAMS = {
    "mask-rcnn_nat-m": 40, "mask-rcnn_nat-t": 48, "mask-rcnn_nat-s": 70,
    "cascade-mask-rcnn_nat-m": 77, "cascade-mask-rcnn_nat-t": 85,
    "cascade-mask-rcnn_nat-s": 108, "cascade-mask-rcnn_nat-b": 147,
    "mask-rcnn_dinat-m": 40, "mask-rcnn_dinat-t": 48, "mask-rcnn_dinat-s": 70,
    "cascade-mask-rcnn_dinat-m": 77, "cascade-mask-rcnn_dinat-t": 85,
    "cascade-mask-rcnn_dinat-s": 108, "cascade-mask-rcnn_dinat-b": 147,
    "cascade-mask-rcnn_dinat-l-in22k-pre": 258,
    "mask-rcnn_dinats-t": 48, "mask-rcnn_dinats-s": 69,
    "cascade-mask-rcnn_dinats-t": 86, "cascade-mask-rcnn_dinats-s": 107,
    "cascade-mask-rcnn_dinats-b": 145, "cascade-mask-rcnn_dinats-l-in22k-pre": 253,
}  # fmt: skip


def test_one_config_per_published_row():
    stems = {p.stem.split("_fpn_")[0] for p in DETECTION_CONFIGS}
    assert stems == set(PUBLISHED_PARAMS)


@pytest.mark.parametrize(
    "path", fast_tier_only(DETECTION_CONFIGS, "-t_", "_fpn_ms-"), ids=lambda p: p.stem
)
def test_config_builds_with_published_recipe(path: Path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == "mmdet"
    assert cfg.custom_imports == dict(imports=["nattk.detection"], allow_failed_imports=False)
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert round(params) == PUBLISHED_PARAMS[path.stem.split("_fpn_")[0]]
    assert model.backbone.out_channels == cfg.model.neck.in_channels
    # The recipe of nat_dinat.md §4.
    amp = "_amp-" in path.name
    assert (cfg.optim_wrapper.type == "AmpOptimWrapper") == amp
    if amp:
        assert cfg.optim_wrapper.loss_scale == 512.0
    assert cfg.optim_wrapper.optimizer.type == "AdamW"
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {"rpb", "norm"}
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.start_factor) == ("LinearLR", 500, 0.001)
    assert steps.milestones == [27, 33]
    assert cfg.train_dataloader.batch_size * 8 == cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.dataset.pipeline[3].type == "RandomChoice"
    assert cfg.model.backbone.init_cfg.checkpoint.startswith("https://shi-labs.com/")
    if "cascade" in path.name:
        for head in cfg.model.roi_head.bbox_head:
            assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
            assert head.norm_cfg.type == "SyncBN"
            assert head.loss_bbox == dict(type="GIoULoss", loss_weight=10.0)


def test_backbone_decay_groups_match_the_original():
    """rpb and every *norm* parameter get no weight decay; biases and gammas do."""
    from mmengine.optim import build_optim_wrapper

    cfg = Config.fromfile(CONFIG_DIR / "nat" / "mask-rcnn_nat-s_fpn_amp-ms-crop-3x_coco.py")
    cfg.optim_wrapper.type = "OptimWrapper"
    cfg.optim_wrapper.pop("loss_scale")
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group["params"]:
            decay[names[id(p)]] = group["weight_decay"]
    assert decay["backbone.levels.0.blocks.0.attn.rpb"] == 0
    assert decay["backbone.levels.1.blocks.0.norm1.weight"] == 0
    assert decay["backbone.norm3.bias"] == 0
    assert decay["backbone.levels.0.blocks.0.gamma1"] == 0.05
    assert decay["backbone.levels.0.blocks.0.attn.qkv.bias"] == 0.05


def test_pretrained_alias_and_errors():
    init_default_scope("mmdet")
    with pytest.warns(DeprecationWarning):
        model = MODELS.build(dict(type="NAT", arch="mini", pretrained="x.pth"))
    assert model.init_cfg == dict(type="Pretrained", checkpoint="x.pth")
    with pytest.raises(ValueError, match="not both"):
        MODELS.build(
            dict(type="NAT", arch="mini", pretrained="x", init_cfg=dict(type="Pretrained"))
        )
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        MODELS.build(dict(type="DiNAT", arch="huge"))
    with pytest.raises(ValueError, match="num_classes"):
        MODELS.build(dict(type="NAT", arch="mini", num_classes=10))


def test_init_cfg_loads_strictly(tmp_path):
    init_default_scope("mmdet")
    source = MODELS.build(dict(type="DiNAT_s", arch="tiny", dilations="coco"))
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    full = tmp_path / "detector.pth"
    torch.save({"state_dict": state}, full)
    model = MODELS.build(
        dict(type="DiNAT_s", arch="tiny", init_cfg=dict(type="Pretrained", checkpoint=str(full)))
    )
    model.init_weights()
    assert model.load_report.loaded == model.load_report.total
    torch.testing.assert_close(model.state_dict()["layers.2.blocks.1.attn.rpb"],
                               source.state_dict()["layers.2.blocks.1.attn.rpb"])  # fmt: skip
    no_rpb = tmp_path / "no_rpb.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("rpb")}, no_rpb)
    model = MODELS.build(
        dict(type="DiNAT_s", arch="tiny", init_cfg=dict(type="Pretrained", checkpoint=str(no_rpb)))
    )
    with pytest.raises(ValueError, match="lacks 12 of the model's tensors"):
        model.init_weights()


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def toy_coco(tmp_path_factory):
    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), num_train=4, num_val=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    [
        "dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py",
        "dinat_s/cascade-mask-rcnn_dinats-t_fpn_amp-ms-crop-3x_coco.py",
    ],
)
def test_train_test_resume_end_to_end(config, toy_coco, tmp_path):
    cfg_path = reduced_detection_config(CONFIG_DIR / config, toy_coco, tmp_path / "reduced.py")
    work = tmp_path / "work"
    log = run_tool("train.py", str(cfg_path), "--work-dir", str(work),
                   "--cfg-options", "train_cfg.max_epochs=1")  # fmt: skip
    assert (work / "epoch_1.pth").is_file()
    assert re.search(r"coco/bbox_mAP: [\d.]+", log) and re.search(r"coco/segm_mAP: [\d.]+", log)

    log = run_tool("train.py", str(cfg_path), "--work-dir", str(work), "--resume",
                   "--cfg-options", "train_cfg.max_epochs=2")  # fmt: skip
    assert "resumed epoch: 1, iter: 2" in log
    assert (work / "epoch_2.pth").is_file()

    out = tmp_path / "predictions.pkl"
    log = run_tool("test.py", str(cfg_path), str(work / "epoch_2.pth"),
                   "--work-dir", str(tmp_path / "test"), "--out", str(out))  # fmt: skip
    metrics = re.search(r"coco/segm_mAP: ([\d.]+)", log)
    assert metrics is not None and 0.0 <= float(metrics.group(1)) <= 1.0
    with open(out, "rb") as f:
        predictions = pickle.load(f)
    assert len(predictions) == 2 and "masks" in predictions[0]["pred_instances"]


# ----------------------------------------------------------------------------- tools
@pytest.mark.slow
@pytest.mark.parametrize(
    "config, params, flops",
    [
        ("nat/mask-rcnn_nat-t_fpn_amp-ms-crop-3x_coco.py", 48, 258),
        ("dinat/cascade-mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py", 85, 737),
        # The Large rows (1276G and co.) are counted in configs/mmdet/README.md; too slow for CI.
    ],
)
def test_get_flops_reproduces_published_numbers(config, params, flops, expected_shape=(800, 1280)):
    """nat_dinat.md §7.2 at 1280×800, within 3%."""
    from nattk import get_flops

    model, traced, shape = get_flops.model_from_config(str(CONFIG_DIR / config))
    assert shape == expected_shape
    counted_params, counted_flops = get_flops.count(traced, shape)
    assert abs(counted_params / 1e6 - params) / params < 0.03
    assert abs(counted_flops / 1e9 - flops) / flops < 0.03


def _mmdet2_checkpoint(model: torch.nn.Module) -> dict:
    """What mmdet 2.19 / mmcv 1.x saved: meta with CLASSES, state_dict, optimizer."""
    return {
        "meta": {
            "mmdet_version": "2.19.0",
            "mmcv_version": "1.4.0",
            "CLASSES": ("square", "disk"),
            "epoch": 36,
            "iter": 263880,
            "config": "model = dict(type='MaskRCNN', ...)",
        },
        "state_dict": {
            k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()
        },  # fmt: skip
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6, "params": [0, 1]}]},
    }


def test_mmdet2_checkpoint_converts_and_loads(tmp_path):
    from mmengine.runner import load_checkpoint

    from nattk import convert_legacy_checkpoint as converter

    config = str(CONFIG_DIR / "nat" / "mask-rcnn_nat-m_fpn_amp-ms-crop-3x_coco.py")
    cfg = Config.fromfile(config)
    init_default_scope("mmdet")
    source = MODELS.build(cfg.model)
    old = tmp_path / "maskrcnn_nat_mini.pth"
    torch.save(_mmdet2_checkpoint(source), old)
    new = tmp_path / "converted.pth"
    converter.main([str(old), str(new), "--config", config])

    converted = torch.load(new, map_location="cpu", weights_only=True)
    assert converted["meta"]["dataset_meta"] == {"classes": ("square", "disk")}
    assert "optimizer" not in converted
    target = MODELS.build(cfg.model)
    load_checkpoint(target, str(new), strict=True)
    for key in ("backbone.levels.2.blocks.3.attn.rpb", "roi_head.mask_head.conv_logits.weight"):
        torch.testing.assert_close(
            target.state_dict()[key], source.state_dict()[key].half().float()
        )

    broken = _mmdet2_checkpoint(source)
    del broken["state_dict"]["backbone.levels.0.blocks.0.attn.rpb"]
    torch.save(broken, old)
    with pytest.raises(ValueError, match="1 model tensors missing"):
        converter.main([str(old), str(new), "--config", config])
    torch.save({"model": {}}, old)
    with pytest.raises(ValueError, match="not an mmdet 2.x / mmseg 0.x checkpoint"):
        converter.main([str(old), str(new)])


def test_test_tool_rejects_mask_tta_with_a_clear_error():
    from nattk import test as test_tool  # what tools/test.py runs

    cfg = Config.fromfile(CONFIG_DIR / "nat" / "mask-rcnn_nat-m_fpn_amp-ms-crop-3x_coco.py")
    with pytest.raises(ValueError, match="cannot merge the instance masks"):
        test_tool.enable_tta(cfg, "mmdet")
    cfg.model.roi_head.pop("mask_head")
    test_tool.enable_tta(cfg, "mmdet")
    assert cfg.model.type == "DetTTAModel" and cfg.model.module.type == "MaskRCNN"
    assert cfg.test_dataloader.dataset.pipeline[-1].type == "TestTimeAug"


def test_demo_loads_a_detector_checkpoint_without_meta_with_the_configs_classes(tmp_path):
    """A ``{'state_dict': ...}`` file: class names from the config, not MMDetection's COCO ones."""
    import cv2
    import numpy as np

    from nattk import demo
    from nattk.inference import load_model

    config = REPO / "configs/quickstart/mask-rcnn_dinat-toy_fpn_toy-coco.py"
    state = load_model(config).state_dict()
    checkpoint = tmp_path / "weights.pth"
    torch.save({"state_dict": state}, checkpoint)

    model = load_model(config, checkpoint)
    assert model.dataset_meta["classes"] == ("square", "disk")
    key = "roi_head.mask_head.conv_logits.weight"
    torch.testing.assert_close(model.state_dict()[key], state[key])

    image, out = tmp_path / "image.jpg", tmp_path / "overlay.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 127, dtype=np.uint8))
    assert demo.main([str(image), str(config), str(checkpoint), "--out", str(out)]) == out
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_the_dinat_s_type_and_its_old_name_build_the_same_class():
    init_default_scope("mmdet")
    small = dict(arch="tiny", depths=[1, 1, 2, 1], dilations="coco")
    new = MODELS.build(dict(type="DiNAT_s", **small))
    old = MODELS.build(dict(type="DiNATs", **small))
    assert type(new) is type(old) is nattk.detection.DiNAT_s
    assert MODELS.get("DiNATs") is MODELS.get("DiNAT_s") is nattk.detection.DiNAT_s


def test_a_dilated_nat_is_refused_by_the_nat_class():
    init_default_scope("mmdet")
    with pytest.raises(ValueError, match=r"NAT has dilation 1 everywhere.*a dinat_\* variant"):
        MODELS.build(
            dict(type="NAT", arch="mini", dilations=[[1, 2, 1], [1] * 4, [1] * 6, [1] * 5])
        )
