"""MMDetection adapter and configs: every config builds; reduced copies train, test, resume."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from nattk.toy_data import make_toy_coco, toy_metainfo

from mm_helpers import REPO, run_tool, set_num_classes, tiny_backbone

pytest.importorskip("mmdet")

from mmdet.registry import MODELS  # noqa: E402

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


@pytest.mark.parametrize("path", DETECTION_CONFIGS, ids=lambda p: p.stem)
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
        MODELS.build(dict(type="NAT", arch="mini", pretrained="x", init_cfg=dict(type="Pretrained")))
    with pytest.raises(ValueError, match="unknown arch 'huge'"):
        MODELS.build(dict(type="DiNAT", arch="huge"))
    with pytest.raises(ValueError, match="num_classes"):
        MODELS.build(dict(type="NAT", arch="mini", num_classes=10))


def test_init_cfg_loads_strictly(tmp_path):
    init_default_scope("mmdet")
    source = MODELS.build(dict(type="DiNATs", arch="tiny", dilations="coco"))
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    full = tmp_path / "detector.pth"
    torch.save({"state_dict": state}, full)
    model = MODELS.build(
        dict(type="DiNATs", arch="tiny", init_cfg=dict(type="Pretrained", checkpoint=str(full)))
    )
    model.init_weights()
    assert model.load_report.loaded == model.load_report.total
    torch.testing.assert_close(model.state_dict()["layers.2.blocks.1.attn.rpb"],
                               source.state_dict()["layers.2.blocks.1.attn.rpb"])  # fmt: skip
    no_rpb = tmp_path / "no_rpb.pth"
    torch.save({k: v for k, v in state.items() if not k.endswith("rpb")}, no_rpb)
    model = MODELS.build(
        dict(type="DiNATs", arch="tiny", init_cfg=dict(type="Pretrained", checkpoint=str(no_rpb)))
    )
    with pytest.raises(ValueError, match="lacks 10 of the model's tensors"):
        model.init_weights()


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def toy_coco(tmp_path_factory):
    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), num_train=4, num_val=2)


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
    cfg.optim_wrapper.type = "OptimWrapper"  # fp16 autocast is a GPU feature
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
