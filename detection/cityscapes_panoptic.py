"""Cityscapes panoptic segmentation for MMDetection (no upstream dataset exists).

Reads the official layout written by ``cityscapesscripts``'
``createPanopticImgs``::

    data/cityscapes/leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
    data/cityscapes/gtFine/cityscapes_panoptic_{train,val}.json
    data/cityscapes/gtFine/cityscapes_panoptic_{train,val}/<name>_gtFine_panoptic.png

The json lists stuff categories before things and uses Cityscapes label ids (road = 7,
person = 24, ...), while MMDetection's panoptic models expect labels ``0..T-1`` to be
the things. Both the dataset and the metric therefore order categories by the
``classes`` of the metainfo (things first) instead of by their order in the json.
"""

from __future__ import annotations

import os.path as osp

from mmdet.datasets import CocoPanopticDataset
from mmdet.datasets.api_wrappers import COCOPanoptic
from mmdet.evaluation import CocoPanopticMetric
from mmdet.registry import DATASETS, METRICS
from mmengine.fileio import get_local_path


class NameOrderedCOCOPanoptic(COCOPanoptic):
    """COCO panoptic API whose ``get_cat_ids(cat_names=...)`` keeps the names' order."""

    def get_cat_ids(self, cat_names=(), sup_names=(), cat_ids=()):
        ids = super().get_cat_ids(cat_names=cat_names, sup_names=sup_names, cat_ids=cat_ids)
        if not cat_names:
            return ids
        by_name = {self.cats[i]["name"]: i for i in ids}
        missing = [n for n in cat_names if n not in by_name]
        if missing:
            raise ValueError(f"classes {missing} are not categories of the annotation file")
        return [by_name[n] for n in cat_names]


@DATASETS.register_module()
class CityscapesPanopticDataset(CocoPanopticDataset):
    """Cityscapes panoptic (19 classes: 8 things, 11 stuff) in the official layout.

    ``data_prefix=dict(img='leftImg8bit/val/', seg='gtFine/cityscapes_panoptic_val/')``;
    images are looked up in their city's sub-folder.
    """

    THING_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
    STUFF_CLASSES = (
        "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
        "traffic sign", "vegetation", "terrain", "sky",
    )  # fmt: skip
    METAINFO = {
        "classes": THING_CLASSES + STUFF_CLASSES,
        "thing_classes": THING_CLASSES,
        "stuff_classes": STUFF_CLASSES,
        "palette": [
            (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100),
            (0, 0, 230), (119, 11, 32), (128, 64, 128), (244, 35, 232), (70, 70, 70),
            (102, 102, 156), (190, 153, 153), (153, 153, 153), (250, 170, 30),
            (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180),
        ],
    }  # fmt: skip
    COCOAPI = NameOrderedCOCOPanoptic

    def parse_data_info(self, raw_data_info: dict) -> dict:
        """Adds the city folder to the image path and names the official id png."""
        img_info = dict(raw_data_info["raw_img_info"])
        file_name = img_info["file_name"]
        city = file_name.split("_")[0]
        img_info["file_name"] = osp.join(city, file_name)
        data_info = super().parse_data_info(dict(raw_data_info, raw_img_info=img_info))
        if self.data_prefix.get("seg"):
            seg_name = file_name.replace("_leftImg8bit.png", "_gtFine_panoptic.png")
            data_info["seg_map_path"] = osp.join(self.data_prefix["seg"], seg_name)
        return data_info


@METRICS.register_module()
class CityscapesPanopticMetric(CocoPanopticMetric):
    """:class:`CocoPanopticMetric` for the Cityscapes layout.

    Categories follow the order of the dataset's classes, and the ground-truth png of
    ``<name>_leftImg8bit.png`` is ``<name>_gtFine_panoptic.png`` (the parent class
    assumes the image's own name with a ``.png`` suffix).
    """

    def __init__(self, ann_file=None, **kwargs) -> None:
        # The parent would parse the json with the json-ordered API; parse it once here.
        super().__init__(ann_file=None, **kwargs)
        if ann_file:
            with get_local_path(ann_file, backend_args=self.backend_args) as local_path:
                self._coco_api = NameOrderedCOCOPanoptic(local_path)
            self.categories = self._coco_api.cats

    def process(self, data_batch: dict, data_samples) -> None:
        """Points each sample's name at its ground-truth png, then evaluates it."""
        renamed = []
        for sample in data_samples:
            name = osp.basename(sample["img_path"])
            if not name.endswith("_leftImg8bit.png"):
                raise ValueError(f"{name} is not a Cityscapes '<name>_leftImg8bit.png' image")
            gt_name = name.replace("_leftImg8bit.png", "_gtFine_panoptic.png")
            renamed.append(
                dict(sample, img_path=osp.join(osp.dirname(sample["img_path"]), gt_name))
            )
        super().process(data_batch, renamed)
