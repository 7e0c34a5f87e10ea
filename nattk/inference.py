"""Single-image inference and overlays for MMDetection and MMSegmentation models.

Used by ``tools/demo.py`` and ``tools/quickstart.py``; the framework is taken from the
config's ``default_scope`` as in ``tools/train.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np
from mmengine.config import Config

from nattk.openmmlab.cli import framework_of
from nattk.openmmlab.compat import checkpoint_allowlist
from nattk.visualize import class_palette, overlay_instances, overlay_semantic

PathLike = Union[str, Path]


def load_model(config, checkpoint: Optional[PathLike] = None, device: str = "cpu"):
    """Builds the model of ``config`` (a path or a loaded Config) and loads ``checkpoint``.

    Returns:
        The model in eval mode, with ``model.cfg`` and ``model.dataset_meta`` set.
    """
    cfg = Config.fromfile(str(config)) if isinstance(config, (str, Path)) else config
    ckpt = None if checkpoint is None else str(checkpoint)
    with checkpoint_allowlist():
        if framework_of(cfg) == "mmdet":
            from mmdet.apis import init_detector

            return init_detector(cfg, ckpt, device=device)
        from mmseg.apis import init_model

        return init_model(cfg, ckpt, device=device)


def read_rgb(path: PathLike) -> np.ndarray:
    """Reads an image file as RGB ``uint8``.

    Raises:
        FileNotFoundError: The file does not exist or is not an image.
    """
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise FileNotFoundError(f"cannot read an image from {path}")
    return image[:, :, ::-1].copy()


def predict_overlay(model, image_path: PathLike, score_thr: float = 0.5) -> np.ndarray:
    """Runs ``model`` on one image; returns the RGB image with its predictions drawn.

    Detections are drawn on the image; a segmentation is shown next to the image.
    """
    image = read_rgb(image_path)
    # Small images are enlarged so that the labels stay legible.
    zoom = max(1, 384 // max(image.shape[:2]))
    big = np.kron(image, np.ones((zoom, zoom, 1), dtype=np.uint8)) if zoom > 1 else image
    if framework_of(model.cfg) == "mmdet":
        from mmdet.apis import inference_detector

        result = inference_detector(model, str(image_path)).pred_instances.cpu()
        masks = result.masks.numpy() if "masks" in result else None
        if masks is not None and zoom > 1:
            masks = np.kron(masks, np.ones((1, zoom, zoom), dtype=masks.dtype))
        return overlay_instances(
            big,
            result.bboxes.numpy() * zoom,
            result.labels.numpy(),
            result.scores.numpy(),
            model.dataset_meta["classes"],
            masks,
            score_thr,
        )
    from mmseg.apis import inference_model

    labels = inference_model(model, str(image_path)).pred_sem_seg.data[0].cpu().numpy()
    palette = model.dataset_meta.get("palette") or class_palette(len(model.dataset_meta["classes"]))
    if zoom > 1:
        labels = np.kron(labels, np.ones((zoom, zoom), dtype=labels.dtype))
    return np.concatenate([big, overlay_semantic(big, labels, palette, alpha=0.6)], axis=1)
