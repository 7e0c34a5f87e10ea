"""Single-image inference and overlays for MMDetection and MMSegmentation models.

Used by ``tools/demo.py`` and ``tools/quickstart.py``; the framework is taken from the
config's ``default_scope`` as in ``tools/train.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from mmengine.config import Config
from mmengine.logging import MMLogger

from nattk.openmmlab.cli import framework_of
from nattk.openmmlab.compat import checkpoint_allowlist
from nattk.openmmlab.strict_load import check_checkpoint_fits
from nattk.visualize import class_palette, overlay_instances, overlay_semantic

PathLike = Union[str, Path]


def load_model(
    config, checkpoint: Optional[PathLike] = None, device: str = "cpu", allow_partial: bool = False
):
    """Builds the model of ``config`` (a path or a loaded Config) and loads ``checkpoint``.

    A checkpoint that leaves model tensors unfilled, holds tensors the model lacks or
    tensors of another shape is refused (:func:`~nattk.openmmlab.strict_load.check_checkpoint_fits`)
    unless ``allow_partial``.

    ``checkpoint`` may be an MMEngine checkpoint, ``{'state_dict': ...}`` or a bare state
    dict. Class names and palette come from its ``meta['dataset_meta']`` (or the
    ``CLASSES``/``PALETTE`` of mmdet 2.x / mmseg 0.x files); without either, from the
    config's test dataset (logged).

    Returns:
        The model in eval mode, with ``model.cfg`` and ``model.dataset_meta`` set.

    Raises:
        ValueError: Neither the checkpoint nor the config's ``test_dataloader`` names
            the classes.
        PartialCheckpointError: The checkpoint does not fit the model.
    """
    cfg = Config.fromfile(str(config)) if isinstance(config, (str, Path)) else config
    framework = framework_of(cfg)
    model = _build(cfg, framework, device)
    if checkpoint is not None:
        check_checkpoint_fits(model, str(checkpoint), allow_partial)
    with checkpoint_allowlist():
        saved = None if checkpoint is None else _load_weights(model, checkpoint)
    model.dataset_meta = _dataset_meta(cfg, framework, saved, checkpoint, model)
    return model


def _build(cfg: Config, framework: str, device: str):
    """The framework's own builder, without weights (mmseg's needs a checkpoint ``meta``).

    MMDetection's then warns that it uses COCO classes (replaced by
    :func:`_dataset_meta`); that warning is dropped, any other is shown.
    """
    with warnings.catch_warnings(record=True) as caught:  # also undoes mmdet's simplefilter
        if framework == "mmdet":
            from mmdet.apis import init_detector

            model = init_detector(cfg, None, device=device)
        else:
            from mmseg.apis import init_model

            model = init_model(cfg, None, device=device)
    for warning in caught:
        if "checkpoint is None" not in str(warning.message):
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return model


def _load_weights(model, checkpoint: PathLike) -> dict:
    """Loads ``checkpoint`` into ``model`` (as MMEngine does); returns its ``meta`` or ``{}``."""
    from mmengine.runner import load_checkpoint

    loaded = load_checkpoint(model, str(checkpoint), map_location="cpu")
    meta = loaded.get("meta") if "state_dict" in loaded else None
    return meta if isinstance(meta, dict) else {}


def _dataset_meta(cfg: Config, framework: str, saved: Optional[dict], checkpoint, model) -> dict:
    """``classes`` and ``palette``: the checkpoint's, else the config's test dataset's.

    Raises:
        ValueError: A checkpoint without class names and a config without a test dataset.
    """
    saved = saved or {}
    if "dataset_meta" in saved:
        meta = {key.lower(): value for key, value in saved["dataset_meta"].items()}
    elif "CLASSES" in saved:  # mmdet 2.x / mmseg 0.x
        meta = {"classes": saved["CLASSES"]}
        if "PALETTE" in saved:
            meta["palette"] = saved["PALETTE"]
    else:
        meta = config_dataset_meta(cfg, framework)
        if meta is None and checkpoint is not None:
            raise ValueError(
                f"{checkpoint} has no meta['dataset_meta'] (class names) and the config "
                "no test_dataloader.dataset to take them from: add either"
            )
        if meta is None:  # no weights either: the builder's stand-in
            return getattr(model, "dataset_meta", None) or {}
        if checkpoint is not None:
            MMLogger.get_current_instance().info(
                f"{checkpoint} has no meta['dataset_meta']: classes and palette from the "
                f"config's test dataset ({len(meta['classes'])} classes)"
            )
    if framework == "mmdet":  # MMDetection's order: the config's palette, then the checkpoint's
        palette = model.dataset_meta.get("palette", "random")
        if palette != "random" or "palette" not in meta:
            meta["palette"] = palette
    return meta


def config_dataset_meta(cfg: Config, framework: str) -> Optional[dict]:
    """``classes`` and ``palette`` of the config's test dataset, without building it.

    The dataset class's ``METAINFO`` updated by the config's ``metainfo``; a palette
    whose length no longer matches the classes is dropped.

    Returns:
        The metainfo, or ``None`` when the config has no ``test_dataloader.dataset``.
    """
    dataset = (cfg.get("test_dataloader") or {}).get("dataset")
    while isinstance(dataset, dict) and ("dataset" in dataset or "datasets" in dataset):
        inner = dataset.get("dataset") or dataset.get("datasets")  # dataset wrappers
        dataset = inner[0] if isinstance(inner, (list, tuple)) else inner
    if not isinstance(dataset, dict) or "type" not in dataset:
        return None
    if framework == "mmdet":
        from mmdet.registry import DATASETS
    else:
        from mmseg.registry import DATASETS
    kind = dataset["type"]
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind
    meta = {**getattr(cls, "METAINFO", {}), **(dataset.get("metainfo") or {})}
    if "classes" not in meta:
        return None
    meta["classes"] = tuple(meta["classes"])
    if "palette" in meta and len(meta["palette"]) != len(meta["classes"]):
        del meta["palette"]
    return meta


def read_rgb(path: PathLike) -> np.ndarray:
    """Reads an image file as RGB ``uint8``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is not an image, or a damaged or truncated one.
    """
    import mmcv

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such image: {path}")
    # mmcv's decoder, as the frameworks' LoadImageFromFile uses: it refuses a cut-off
    # JPEG that cv2.imread would half-decode.
    image = mmcv.imfrombytes(path.read_bytes(), flag="color", channel_order="bgr")
    if image is None:
        raise ValueError(f"not an image that can be decoded: {path} (damaged or truncated?)")
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
