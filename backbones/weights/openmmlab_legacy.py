"""mmdet 2.x / mmseg 0.x checkpoints (mmcv 1.x), as the published COCO and ADE20K files.

``{"state_dict": {"backbone.*", "neck.*", ...}, "meta": {"mmcv_version", "CLASSES",
"PALETTE", ...}, "optimizer": ...}``. Backbone keys are the official ones under
``backbone.``; the MMDetection 3 / MMSegmentation 1 heads kept their names, so moving a
whole model to MMEngine is a change of wrapping (:func:`to_mmengine`).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .official import unwrap

StateDict = dict[str, torch.Tensor]
NAME = "openmmlab_legacy"
FILE_FORMAT = "torch"
_LEGACY_META = ("mmcv_version", "mmdet_version", "mmseg_version", "CLASSES")
_KEEP_META = ("mmdet_version", "mmcv_version", "epoch", "iter", "config")


def detect(obj: object, prefix: Optional[str] = None) -> bool:
    """Whether ``obj`` is an mmcv 1.x runner checkpoint (``state_dict`` + mmcv ``meta``)."""
    if not isinstance(obj, Mapping) or not isinstance(obj.get("state_dict"), Mapping):
        return False
    meta = obj.get("meta")
    return isinstance(meta, Mapping) and any(key in meta for key in _LEGACY_META)


def to_official(obj: Mapping, prefix: Optional[str] = None) -> StateDict:
    """The backbone's official state dict (the ``backbone.*`` part)."""
    return unwrap(obj, prefix)


def from_official(state: Mapping[str, torch.Tensor], meta: Mapping) -> dict:
    """A backbone-only mmcv 1.x checkpoint: ``{"state_dict": {"backbone.*"}, "meta": meta}``.

    ``meta`` must name the versions that wrote it (e.g. ``mmcv_version``): they are what
    tells this layout apart.
    """
    return {"state_dict": {f"backbone.{k}": v for k, v in state.items()}, "meta": dict(meta)}


def check(obj: object, source: str) -> Mapping:
    """``obj`` if it is a runner checkpoint (``state_dict`` wrapped); else a clear error.

    Raises:
        ValueError: No ``state_dict`` (naming what the file holds instead).
    """
    if not isinstance(obj, Mapping) or "state_dict" not in obj:
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{source} is not an mmdet 2.x / mmseg 0.x checkpoint (no 'state_dict'; found {keys})"
        )
    return obj


def to_mmengine(checkpoint: Mapping, converted_by: str) -> dict:
    """The whole model as an MMEngine checkpoint ``{"state_dict", "meta"}``.

    The optimizer state is dropped, half tensors become float32, a ``module.`` prefix is
    removed, and mmcv's ``meta["CLASSES"]``/``["PALETTE"]`` become MMEngine's
    ``meta["dataset_meta"]`` (``classes``, ``palette``).
    """
    state = {}
    for key, value in checkpoint["state_dict"].items():
        key = key[len("module.") :] if key.startswith("module.") else key
        state[key] = value.float() if value.is_floating_point() else value
    old_meta = checkpoint.get("meta") or {}
    meta = {k: old_meta[k] for k in _KEEP_META if k in old_meta}
    dataset_meta = {}
    if old_meta.get("CLASSES") is not None:
        dataset_meta["classes"] = tuple(old_meta["CLASSES"])
    if old_meta.get("PALETTE") is not None:
        dataset_meta["palette"] = [list(color) for color in old_meta["PALETTE"]]
    if dataset_meta:
        meta["dataset_meta"] = dataset_meta
    meta["converted_by"] = converted_by
    return dict(state_dict=state, meta=meta)
