"""Tiny synthetic datasets in the real COCO layouts, for tests and quick starts.

Images show coloured squares and disks (the "thing" classes) on a textured
background (the "stuff" class of the panoptic layout). Everything is written in the
formats the frameworks read: COCO instance json with polygon masks, and COCO
panoptic json + RGB-encoded id pngs (``id = R + 256 G + 256² B``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

THING_CLASSES = ("square", "disk")
STUFF_CLASSES = ("background",)
_COLORS = {"square": (220, 60, 40), "disk": (40, 90, 220)}


@dataclass
class _Shape:
    kind: str
    cx: float
    cy: float
    radius: float

    def polygon(self) -> list[float]:
        """Closed outline as a flat ``[x0, y0, x1, y1, ...]`` list."""
        if self.kind == "square":
            r = self.radius
            corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
        else:
            corners = [
                (self.radius * math.cos(a), self.radius * math.sin(a))
                for a in np.linspace(0, 2 * math.pi, 24, endpoint=False)
            ]
        return [round(v, 2) for dx, dy in corners for v in (self.cx + dx, self.cy + dy)]

    def mask(self, height: int, width: int) -> np.ndarray:
        ys, xs = np.mgrid[0:height, 0:width] + 0.5
        if self.kind == "square":
            inside = (np.abs(xs - self.cx) <= self.radius) & (np.abs(ys - self.cy) <= self.radius)
        else:
            inside = (xs - self.cx) ** 2 + (ys - self.cy) ** 2 <= self.radius**2
        return inside


def _random_scene(rng: np.random.Generator, height: int, width: int, max_shapes: int):
    """An image and its non-overlapping shapes."""
    image = rng.integers(90, 150, size=(height, width, 3)).astype(np.uint8)
    shapes: list[_Shape] = []
    for _ in range(50):
        if len(shapes) == max_shapes:
            break
        radius = float(rng.uniform(0.1, 0.2) * min(height, width))
        cx = float(rng.uniform(radius + 1, width - radius - 1))
        cy = float(rng.uniform(radius + 1, height - radius - 1))
        if any(math.hypot(cx - s.cx, cy - s.cy) < 1.5 * (radius + s.radius) for s in shapes):
            continue
        shapes.append(_Shape(THING_CLASSES[int(rng.integers(len(THING_CLASSES)))], cx, cy, radius))
    for shape in shapes:
        image[shape.mask(height, width)] = _COLORS[shape.kind]
    return image, shapes


def _write_image(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image[:, :, ::-1]):
        raise OSError(f"could not write {path}")


def make_toy_coco(
    root: Union[str, Path],
    num_train: int = 8,
    num_val: int = 4,
    size: tuple[int, int] = (96, 128),
    max_shapes: int = 3,
    seed: int = 0,
) -> Path:
    """Writes a COCO-format instance + panoptic dataset under ``root``.

    Layout (the standard COCO one)::

        root/train2017/*.jpg, root/val2017/*.jpg
        root/annotations/instances_{train,val}2017.json
        root/annotations/panoptic_{train,val}2017.json
        root/annotations/panoptic_{train,val}2017/*.png

    Args:
        root: Output directory (created).
        num_train: Training images.
        num_val: Validation images.
        size: Image ``(height, width)``.
        max_shapes: Upper bound of objects per image (at least one is drawn).
        seed: Random seed; the same arguments always produce the same files.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    thing_ids = {name: i + 1 for i, name in enumerate(THING_CLASSES)}
    stuff_id = len(THING_CLASSES) + 1
    instance_categories = [
        dict(id=thing_ids[n], name=n, supercategory="shape") for n in THING_CLASSES
    ]
    panoptic_categories = [dict(c, isthing=1) for c in instance_categories] + [
        dict(id=stuff_id, name=STUFF_CLASSES[0], supercategory="stuff", isthing=0)
    ]
    for split, count in (("train2017", num_train), ("val2017", num_val)):
        images, annotations, panoptic = [], [], []
        for index in range(count):
            image_id = index + 1
            image, shapes = _random_scene(rng, height, width, max_shapes)
            file_name = f"{image_id:012d}.jpg"
            _write_image(root / split / file_name, image)
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            ids = np.full((height, width), stuff_id * 1000, dtype=np.int64)
            segments = []
            for k, shape in enumerate(shapes):
                mask = shape.mask(height, width)
                ys, xs = np.nonzero(mask)
                bbox = [float(xs.min()), float(ys.min())]
                bbox += [float(xs.max() + 1) - bbox[0], float(ys.max() + 1) - bbox[1]]
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=image_id,
                        category_id=thing_ids[shape.kind],
                        segmentation=[shape.polygon()],
                        area=float(mask.sum()),
                        bbox=bbox,
                        iscrowd=0,
                    )
                )
                segment_id = thing_ids[shape.kind] * 1000 + k + 1
                ids[mask] = segment_id
                segments.append(
                    dict(
                        id=segment_id,
                        category_id=thing_ids[shape.kind],
                        area=int(mask.sum()),
                        bbox=bbox,
                        iscrowd=0,
                    )
                )
            background = ids == stuff_id * 1000
            ys, xs = np.nonzero(background)
            segments.append(
                dict(
                    id=stuff_id * 1000,
                    category_id=stuff_id,
                    area=int(background.sum()),
                    bbox=[int(xs.min()), int(ys.min()), int(np.ptp(xs) + 1), int(np.ptp(ys) + 1)],
                    iscrowd=0,
                )
            )
            png_name = file_name.replace(".jpg", ".png")
            rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], axis=-1).astype(np.uint8)
            _write_image(root / "annotations" / f"panoptic_{split}" / png_name, rgb)
            panoptic.append(dict(image_id=image_id, file_name=png_name, segments_info=segments))
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        instances = dict(images=images, annotations=annotations, categories=instance_categories)
        panoptic_json = dict(images=images, annotations=panoptic, categories=panoptic_categories)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(instances))
        (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(panoptic_json))
    return root


def _semantic_scenes(rng, count, size, max_shapes, first_label):
    """Images and label maps: background ``first_label``, then one label per thing."""
    for _ in range(count):
        image, shapes = _random_scene(rng, *size, max_shapes)
        labels = np.full(size, first_label, dtype=np.uint8)
        for shape in shapes:
            labels[shape.mask(*size)] = first_label + 1 + THING_CLASSES.index(shape.kind)
        yield image, labels


def make_toy_ade20k(
    root: Union[str, Path],
    num_train: int = 8,
    num_val: int = 4,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
) -> Path:
    """Writes a semantic-segmentation set in the ADE20K layout under ``root``.

    ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``
    with ADE20K's label convention: 0 is "other" (ignored with ``reduce_zero_label``),
    1 background, 2 square, 3 disk.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("training", num_train), ("validation", num_val)):
        for index, (image, labels) in enumerate(
            _semantic_scenes(rng, count, size, 3, first_label=1)
        ):
            name = f"ADE_{split[:5]}_{index:08d}"
            _write_image(root / "images" / split / f"{name}.jpg", image)
            _write_image(root / "annotations" / split / f"{name}.png", labels[:, :, None])
    return root


def make_toy_cityscapes(
    root: Union[str, Path],
    num_train: int = 8,
    num_val: int = 4,
    size: tuple[int, int] = (64, 128),
    seed: int = 0,
) -> Path:
    """Writes a semantic-segmentation set in the Cityscapes layout under ``root``.

    ``leftImg8bit/{train,val}/toycity/*_leftImg8bit.png`` and
    ``gtFine/{train,val}/toycity/*_gtFine_labelTrainIds.png`` (train ids: 0 background,
    1 square, 2 disk).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", num_train), ("val", num_val)):
        for index, (image, labels) in enumerate(
            _semantic_scenes(rng, count, size, 3, first_label=0)
        ):
            stem = f"toycity_000000_{index:06d}"
            _write_image(
                root / "leftImg8bit" / split / "toycity" / f"{stem}_leftImg8bit.png", image
            )
            gt = root / "gtFine" / split / "toycity" / f"{stem}_gtFine_labelTrainIds.png"
            _write_image(gt, labels[:, :, None])
    return root


def toy_metainfo(panoptic: bool = False) -> dict:
    """``metainfo`` to give MMDetection's COCO datasets for the toy data.

    MMSegmentation only accepts a subset of a dataset's own classes: give its first
    three classes for the semantic toy sets (their ids then map to themselves).
    """
    if panoptic:
        return dict(
            classes=THING_CLASSES + STUFF_CLASSES,
            thing_classes=THING_CLASSES,
            stuff_classes=STUFF_CLASSES,
        )
    return dict(classes=THING_CLASSES)
