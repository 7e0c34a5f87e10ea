"""Mask2Former's Detectron2 training augmentations as MMDetection transforms.

* :class:`ColorAugSSD` is Detectron2's ``ColorAugSSDTransform`` (``INPUT.COLOR_AUG_SSD``),
  which MMDetection's ``PhotoMetricDistortion`` is not: that one permutes channels with
  probability 0.5, shifts hue on a 0–360 scale and keeps float values between steps.
* :class:`RandomCropKeepEmpty` is the plain random crop of Mask2Former's instance
  mapper, which keeps every annotated instance as a target, with an empty mask when the
  crop misses it (MMDetection's ``RandomCrop`` drops instances whose box leaves the crop).
"""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import RandomCrop
from mmdet.registry import TRANSFORMS


def _saturate(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``img·alpha + beta`` in float32, clipped to [0, 255] and truncated to uint8."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


@TRANSFORMS.register_module()
class ColorAugSSD(BaseTransform):
    """Detectron2's SSD colour augmentation (``ColorAugSSDTransform``) on a BGR image.

    Each step fires with probability 0.5 and clips to uint8 before the next:
    brightness ``+U(-32, 32)``; then either contrast, saturation, hue or saturation,
    hue, contrast (0.5 each); contrast ``×U(0.5, 1.5)``; saturation ``×U(0.5, 1.5)`` on
    OpenCV's HSV S channel; hue ``+randint(-18, 18)`` modulo 180 on OpenCV's H channel
    (0–180, i.e. up to ±36°). No channel permutation.

    Float images (``to_float32=True`` loaders) are clipped and truncated to uint8 first,
    as the colour conversions of the original work on uint8; the output is uint8.

    Args:
        brightness_delta: Largest brightness shift.
        contrast_range: Range of the contrast factor.
        saturation_range: Range of the saturation factor.
        hue_delta: Largest hue shift in OpenCV units (half degrees).
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
    ):
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = int(hue_delta)

    def sample(self, rng: Optional[np.random.Generator] = None) -> dict:
        """Draws the decisions of one application (``None`` = step skipped)."""
        draw = rng.random if rng is not None else np.random.random_sample

        def fires() -> bool:
            return draw() < 0.5

        def uniform(low: float, high: float) -> float:
            return low + (high - low) * draw()

        params = {"contrast_first": fires()}
        params["brightness"] = (
            uniform(-self.brightness_delta, self.brightness_delta) if fires() else None
        )
        params["contrast"] = uniform(*self.contrast_range) if fires() else None
        params["saturation"] = uniform(*self.saturation_range) if fires() else None
        span = 2 * self.hue_delta + 1
        params["hue"] = int(draw() * span) - self.hue_delta if fires() else None
        return params

    @staticmethod
    def apply(img: np.ndarray, params: dict) -> np.ndarray:
        """Applies drawn decisions (see :meth:`sample`) to a BGR image; returns uint8."""
        img = _saturate(img)
        if params["brightness"] is not None:
            img = _saturate(img, beta=params["brightness"])

        def contrast(x):
            return x if params["contrast"] is None else _saturate(x, alpha=params["contrast"])

        def saturation(x):
            if params["saturation"] is None:
                return x
            hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
            hsv[..., 1] = _saturate(hsv[..., 1], alpha=params["saturation"])
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

        def hue(x):
            if params["hue"] is None:
                return x
            hsv = cv2.cvtColor(x, cv2.COLOR_BGR2HSV)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + params["hue"]) % 180
            return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)

        if params["contrast_first"]:
            return hue(saturation(contrast(img)))
        return contrast(hue(saturation(img)))

    def transform(self, results: dict) -> dict:
        """Augments ``results['img']`` in place of the dict."""
        results["img"] = self.apply(results["img"], self.sample())
        return results

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(brightness_delta={self.brightness_delta}, "
            f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
            f"hue_delta={self.hue_delta})"
        )


@TRANSFORMS.register_module()
class RandomCropKeepEmpty(RandomCrop):
    """``RandomCrop`` that keeps every instance, with an empty mask if the crop misses it.

    Mask2Former's instance mapper crops polygons and rasterises what is left, so an
    instance outside the crop becomes an all-zero target mask; nothing is filtered.
    Boxes are recomputed from the cropped masks (all-zero for empty ones). Takes the
    arguments of MMDetection's ``RandomCrop``; ``allow_negative_crop`` and
    ``recompute_bbox`` are implied.

    Raises:
        KeyError: The results carry boxes but no masks (nothing to recompute from).
    """

    def _crop_data(self, results: dict, crop_size: tuple[int, int], allow_negative_crop: bool):
        img = results["img"]
        margin = (max(img.shape[0] - crop_size[0], 0), max(img.shape[1] - crop_size[1], 0))
        top, left = self._rand_offset(margin)
        bottom, right = top + crop_size[0], left + crop_size[1]
        shift = np.array([[1, 0, -left], [0, 1, -top], [0, 0, 1]], dtype=np.float32)
        previous = results.get("homography_matrix")
        results["homography_matrix"] = shift if previous is None else shift @ previous
        results["img"] = img[top:bottom, left:right, ...]
        results["img_shape"] = results["img"].shape[:2]
        if results.get("gt_seg_map") is not None:
            results["gt_seg_map"] = results["gt_seg_map"][top:bottom, left:right]
        if results.get("gt_bboxes") is not None:
            if results.get("gt_masks") is None:
                raise KeyError("RandomCropKeepEmpty needs gt_masks (LoadAnnotations with_mask)")
            masks = results["gt_masks"].crop(np.asarray([left, top, right, bottom]))
            results["gt_masks"] = masks
            results["gt_bboxes"] = masks.get_bboxes(type(results["gt_bboxes"]))
        return results
