"""Mask2Former DiNAT-L configs on MMDetection, and the Cityscapes panoptic dataset."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mm_helpers import REPO, fast_tier_only, run_tool, tiny_backbone
from mmengine.config import Config
from mmengine.registry import init_default_scope

from nattk.quickstart.toy_data import make_toy_coco, toy_metainfo

pytest.importorskip("mmdet")

from mmdet.registry import DATASETS, METRICS, MODELS  # noqa: E402

M2F_DIR = REPO / "configs" / "mmdet" / "mask2former"
M2F_CONFIGS = sorted(M2F_DIR.glob("*.py"))
TASKS = {
    "coco-panoptic": (80, 53, "CocoPanopticDataset"),
    "coco.py": (80, 0, "CocoDataset"),
    "ade20k-panoptic": (100, 50, "ADE20KPanopticDataset"),
    "ade20k-instance": (100, 0, "ADE20KInstanceDataset"),
    "cityscapes-panoptic": (8, 11, "CityscapesPanopticDataset"),
    "cityscapes-instance": (8, 0, "CityscapesDataset"),
}


def test_every_published_task_has_a_config():
    assert len(M2F_CONFIGS) == len(TASKS)
    for key in TASKS:
        assert sum(key in p.name for p in M2F_CONFIGS) == 1, key


@pytest.mark.parametrize("path", fast_tier_only(M2F_CONFIGS, "coco-panoptic"), ids=lambda p: p.stem)
def test_config_builds_with_published_recipe(path):
    cfg = Config.fromfile(path)
    things, stuff, dataset = next(v for k, v in TASKS.items() if k in path.name)
    head = cfg.model.panoptic_head
    assert (head.num_things_classes, head.num_stuff_classes) == (things, stuff)
    assert cfg.train_dataloader.dataset.type == dataset
    assert head.num_queries == 200
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.kernel_size) == ("DiNAT", "large", 11)
    assert (backbone.dilations, backbone.drop_path_rate) == ("m2f", 0.3)
    assert cfg.optim_wrapper.type == "OptimWrapper"  # AMP off, as the yamls
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=0.01, norm_type=2)
    assert cfg.optim_wrapper.constructor == "Detectron2OptimWrapperConstructor"
    assert cfg.optim_wrapper.paramwise_cfg == dict(
        backbone_lr_mult=0.1, weight_decay_norm=0.0, weight_decay_embed=0.0
    )
    iters = {"coco": 737500, "ade20k": 160000, "cityscapes": 90000}
    assert cfg.train_cfg.max_iters == next(v for k, v in iters.items() if f"_{k}" in path.name)
    init_default_scope("mmdet")
    model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(params - 220) / 220 < 0.01  # published: 220M


def reduced_m2f_config(data_root: Path, out: Path) -> Path:
    """CPU-sized COCO-panoptic Mask2Former: toy backbone, 2 decoder layers, 128² LSJ."""
    cfg = Config.fromfile(M2F_DIR / "mask2former_dinat-l-in22k-pre_8xb2-lsj-100e_coco-panoptic.py")
    widths = tiny_backbone(cfg)
    head = cfg.model.panoptic_head
    head.update(in_channels=widths, num_queries=10, num_things_classes=2, num_stuff_classes=1)
    head.loss_cls.class_weight = [1.0, 1.0, 1.0, 0.1]
    head.pixel_decoder.encoder.num_layers = 1
    head.transformer_decoder.num_layers = 2
    cfg.model.panoptic_fusion_head.update(num_things_classes=2, num_stuff_classes=1)
    cfg.model.train_cfg.num_points = 1024
    cfg.model.test_cfg.max_per_image = 10  # at most queries x thing classes
    size = (128, 128)
    cfg.model.data_preprocessor.batch_augments[0].size = size
    train = cfg.train_dataloader.dataset.pipeline
    train[3].scale, train[4].crop_size = size, size
    cfg.test_dataloader.dataset.pipeline[1].scale = (160, 128)
    for split, loader in (("train2017", "train_dataloader"), ("val2017", "val_dataloader")):
        dataset = cfg[loader].dataset
        dataset.update(
            data_root=str(data_root) + "/",
            ann_file=f"annotations/panoptic_{split}.json",
            data_prefix=dict(img=f"{split}/", seg=f"annotations/panoptic_{split}/"),
            metainfo=toy_metainfo(panoptic=True),
        )
        cfg[loader].update(num_workers=0, persistent_workers=False, batch_size=2)
    cfg.val_dataloader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline
    cfg.test_dataloader = cfg.val_dataloader
    annotations = data_root / "annotations"
    panoptic, instances, semantic = cfg.val_evaluator
    assert semantic.type == "SemSegMetric"
    panoptic.update(
        ann_file=str(annotations / "panoptic_val2017.json"),
        seg_prefix=str(annotations / "panoptic_val2017"),
    )
    instances.ann_file = str(annotations / "instances_val2017.json")
    cfg.test_evaluator = cfg.val_evaluator
    cfg.train_cfg = dict(type="IterBasedTrainLoop", max_iters=2, val_interval=2)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 2
    cfg.dump(out)
    return out


@pytest.mark.slow
def test_mask2former_panoptic_trains_and_evaluates(tmp_path):
    data = make_toy_coco(tmp_path / "toy", num_train=4, num_val=2)
    cfg_path = reduced_m2f_config(data, tmp_path / "m2f.py")
    work = tmp_path / "work"
    log = run_tool("train.py", str(cfg_path), "--work-dir", str(work))
    assert re.search(r"loss_mask: [\d.]+", log)
    pq = re.search(r"coco_panoptic/PQ: ([\d.]+)", log)
    assert pq is not None and 0.0 <= float(pq.group(1)) <= 100.0
    assert re.search(r"coco/segm_mAP: [\d.]+", log)
    miou = re.search(r"mIoU: ([\d.]+)", log)  # the panoptic model's semantic output
    assert miou is not None and 0.0 <= float(miou.group(1)) <= 100.0
    assert (work / "iter_2.pth").is_file()


# ----------------------------------------------------------------------------- Cityscapes
TOY_CATEGORIES = [  # stuff first and Cityscapes-style label ids, as in the official json
    dict(id=7, name="background", isthing=0, supercategory="flat"),
    dict(id=24, name="square", isthing=1, supercategory="human"),
    dict(id=26, name="disk", isthing=1, supercategory="vehicle"),
]


def make_toy_cityscapes_panoptic(root: Path) -> Path:
    """The toy COCO panoptic data re-laid out as cityscapesscripts writes Cityscapes."""
    import cv2

    coco = make_toy_coco(root / "coco", num_train=1, num_val=2)
    source = json.loads((coco / "annotations" / "panoptic_val2017.json").read_text())
    to_city = {1: 24, 2: 26, 3: 7}
    images, annotations = [], []
    for image, ann in zip(source["images"], source["annotations"]):
        stem = f"toycity_000000_{image['id']:06d}"
        target = root / "leftImg8bit" / "val" / "toycity" / f"{stem}_leftImg8bit.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.imread(str(coco / "val2017" / image["file_name"])))
        png = root / "gtFine" / "cityscapes_panoptic_val" / f"{stem}_gtFine_panoptic.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(coco / "annotations" / "panoptic_val2017" / ann["file_name"], png)
        images.append(dict(image, id=stem, file_name=f"{stem}_leftImg8bit.png"))
        segments = [dict(s, category_id=to_city[s["category_id"]]) for s in ann["segments_info"]]
        annotations.append(dict(image_id=stem, file_name=png.name, segments_info=segments))
    gt = dict(images=images, annotations=annotations, categories=TOY_CATEGORIES)
    (root / "gtFine" / "cityscapes_panoptic_val.json").write_text(json.dumps(gt))
    return root


def test_cityscapes_panoptic_dataset_and_metric(tmp_path):
    import cv2
    from mmdet.evaluation.functional import INSTANCE_OFFSET

    import nattk.detection  # noqa: F401  (registers the dataset and metric)

    root = make_toy_cityscapes_panoptic(tmp_path)
    metainfo = dict(
        classes=("square", "disk", "background"),
        thing_classes=("square", "disk"),
        stuff_classes=("background",),
    )
    dataset = DATASETS.build(
        dict(
            type="CityscapesPanopticDataset",
            data_root=str(root) + "/",
            ann_file="gtFine/cityscapes_panoptic_val.json",
            data_prefix=dict(img="leftImg8bit/val/", seg="gtFine/cityscapes_panoptic_val/"),
            metainfo=metainfo,
            test_mode=True,
            pipeline=[],
        )
    )
    assert len(dataset) == 2
    # Things get labels 0..T-1 although the json lists the stuff category first.
    assert dataset.cat2label == {24: 0, 26: 1, 7: 2}
    info = dataset.get_data_info(0)
    assert Path(info["img_path"]).is_file() and "/toycity/" in info["img_path"]
    assert Path(info["seg_map_path"]).is_file()
    assert {s["category"] for s in info["segments_info"]} >= {2}

    metric = METRICS.build(
        dict(
            type="CityscapesPanopticMetric",
            ann_file=str(root / "gtFine" / "cityscapes_panoptic_val.json"),
            seg_prefix=str(root / "gtFine" / "cityscapes_panoptic_val"),
        )
    )
    metric.dataset_meta = dataset.metainfo
    samples = []
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        rgb = cv2.imread(info["seg_map_path"])[:, :, ::-1].astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        prediction = np.zeros_like(ids)
        for k, segment in enumerate(info["segments_info"], start=1):
            instance = k if segment["is_thing"] else 0
            prediction[ids == segment["id"]] = segment["category"] + instance * INSTANCE_OFFSET
        samples.append(
            dict(
                img_id=info["img_id"],
                img_path=info["img_path"],
                ori_shape=ids.shape,
                pred_panoptic_seg=dict(sem_seg=torch.from_numpy(prediction)[None]),
            )
        )
    metric.process({}, samples)
    results = metric.evaluate(len(samples))
    assert results["coco_panoptic/PQ"] == pytest.approx(100.0)
