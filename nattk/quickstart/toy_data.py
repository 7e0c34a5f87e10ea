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
from typing import Callable, Optional, Union

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


@dataclass
class _Thing:
    """One visible object: its class, visible mask and outline polygons."""

    kind: str
    mask: np.ndarray
    polygons: list[list[float]]


def _simple_things(rng, height, width, max_shapes) -> tuple[np.ndarray, list[_Thing]]:
    image, shapes = _random_scene(rng, height, width, max_shapes)
    return image, [_Thing(s.kind, s.mask(height, width), [s.polygon()]) for s in shapes]


def _outline(mask: np.ndarray) -> list[list[float]]:
    import cv2

    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    return [[float(v) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def _texture(rng, height: int, width: int, color: np.ndarray) -> np.ndarray:
    """A flat, striped, checkered or speckled fill in shades of ``color``."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    kind = int(rng.integers(4))
    if kind == 0:
        pattern = np.zeros((height, width), np.float32)
    elif kind == 1:
        angle, period = rng.uniform(0, math.pi), rng.uniform(4, 10)
        pattern = np.sin((xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period) > 0
    elif kind == 2:
        cell = int(rng.integers(3, 8))
        pattern = ((xs // cell + ys // cell) % 2).astype(np.float32)
    else:
        pattern = rng.random((height, width)) > 0.5
    shade = 1.0 - 0.35 * pattern.astype(np.float32)[..., None]
    return np.clip(color[None, None] * shade, 0, 255)


def _cluttered_scene(rng, height, width, max_shapes) -> tuple[np.ndarray, list[_Thing]]:
    """Random colours and textures, partial occlusion and background clutter.

    The class is the shape alone (a square or a disk of any colour and texture);
    the background is a noisy two-colour gradient with thin lines and small dots.
    """
    import cv2

    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(height, width)
    ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
    low, high = rng.integers(40, 216, size=(2, 3)).astype(np.float32)
    image = low + (high - low) * ramp[..., None] + rng.normal(0, 8, (height, width, 3))
    for _ in range(int(rng.integers(3, 9))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            p0 = tuple(int(v) for v in rng.integers(0, (width, height)))
            p1 = tuple(int(v) for v in rng.integers(0, (width, height)))
            cv2.line(image, p0, p1, color, int(rng.integers(1, 3)))
        else:
            center = tuple(int(v) for v in rng.integers(0, (width, height)))
            cv2.circle(image, center, int(rng.integers(1, 4)), color, -1)

    count = int(rng.integers(1, max_shapes + 1))
    shapes = []
    for _ in range(count * 10):
        if len(shapes) == count:
            break
        radius = float(rng.uniform(0.08, 0.22) * min(height, width))
        cx = float(rng.uniform(radius, width - radius))
        cy = float(rng.uniform(radius, height - radius))
        # Neighbours may overlap, but never hide more than a fraction of each other.
        if any(math.hypot(cx - s.cx, cy - s.cy) < 0.9 * (radius + s.radius) for s in shapes):
            continue
        shapes.append(_Shape(THING_CLASSES[int(rng.integers(len(THING_CLASSES)))], cx, cy, radius))
    things, covered = [], np.zeros((height, width), bool)
    for shape in reversed(shapes):  # front to back: later shapes are drawn on top
        full = shape.mask(height, width)
        visible = full & ~covered
        covered |= full
        fill = _texture(rng, height, width, rng.integers(0, 256, 3).astype(np.float32))
        things.append((shape.kind, visible, fill))
    for _kind, visible, fill in things:
        image[visible] = fill[visible]
    image = np.clip(image, 0, 255).astype(np.uint8)
    # Slivers of under 16 visible pixels stay in the picture but are not annotated
    # (too small to outline), as crowd-free COCO annotators would skip them.
    kept = [_Thing(k, v, _outline(v)) for k, v, _ in reversed(things) if v.sum() >= 16]
    return image, [t for t in kept if t.polygons]


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
    cluttered: bool = False,
    progress: Optional[Callable[[], None]] = None,
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
        cluttered: Random colours and textures, partial occlusion (masks and boxes of
            the visible parts) and background clutter, instead of two flat colours.
        progress: Called once after each image is written.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    scene = _cluttered_scene if cluttered else _simple_things
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
            image, shapes = scene(rng, height, width, max_shapes)
            file_name = f"{image_id:012d}.jpg"
            _write_image(root / split / file_name, image)
            if progress is not None:
                progress()
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            ids = np.full((height, width), stuff_id * 1000, dtype=np.int64)
            segments = []
            for k, shape in enumerate(shapes):
                mask = shape.mask
                ys, xs = np.nonzero(mask)
                bbox = [float(xs.min()), float(ys.min())]
                bbox += [float(xs.max() + 1) - bbox[0], float(ys.max() + 1) - bbox[1]]
                annotations.append(
                    dict(
                        id=len(annotations) + 1,
                        image_id=image_id,
                        category_id=thing_ids[shape.kind],
                        segmentation=shape.polygons,
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


def _semantic_scenes(rng, count, size, max_shapes, first_label, cluttered=False):
    """Images and label maps: background ``first_label``, then one label per thing."""
    scene = _cluttered_scene if cluttered else _simple_things
    for _ in range(count):
        image, things = scene(rng, *size, max_shapes)
        labels = np.full(size, first_label, dtype=np.uint8)
        for thing in things:
            labels[thing.mask] = first_label + 1 + THING_CLASSES.index(thing.kind)
        yield image, labels


def make_toy_ade20k(
    root: Union[str, Path],
    num_train: int = 8,
    num_val: int = 4,
    size: tuple[int, int] = (96, 128),
    seed: int = 0,
    cluttered: bool = False,
    max_shapes: int = 3,
    progress: Optional[Callable[[], None]] = None,
) -> Path:
    """Writes a semantic-segmentation set in the ADE20K layout under ``root``.

    ``images/{training,validation}/*.jpg`` and ``annotations/{training,validation}/*.png``
    with ADE20K's label convention: 0 is "other" (ignored with ``reduce_zero_label``),
    1 background, 2 square, 3 disk. ``cluttered`` and ``progress`` as in
    :func:`make_toy_coco`.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("training", num_train), ("validation", num_val)):
        for index, (image, labels) in enumerate(
            _semantic_scenes(rng, count, size, max_shapes, 1, cluttered)
        ):
            name = f"ADE_{split[:5]}_{index:08d}"
            _write_image(root / "images" / split / f"{name}.jpg", image)
            _write_image(root / "annotations" / split / f"{name}.png", labels[:, :, None])
            if progress is not None:
                progress()
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
