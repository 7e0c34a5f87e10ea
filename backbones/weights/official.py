"""The official layout: the ``state_dict`` of the original NAT/DiNAT/DiNAT_s code.

Keys as the original classes name them (``patch_embed.*``, ``levels.{i}.blocks.{j}.*``
or, for DiNAT_s, ``layers.{i}.blocks.{j}.*``, ``norm``/``head`` of the classifier,
``norm0``..``norm3`` of the dense backbones). This is the layout every other module of
this package converts to and from. The published ``.pth`` files hold it flat or under
``model``/``state_dict``, with keys optionally prefixed ``module.``; whole detector or
segmentor checkpoints hold it under ``backbone.``.
"""

from __future__ import annotations

import re
from typing import Mapping, Optional

import torch

StateDict = dict[str, torch.Tensor]
NAME = "official"
FILE_FORMAT = "torch"
#: Wrapper keys unwrapped from the outside in (``{"model": {...}}``, ``{"state_dict": ...}``).
WRAPPERS = ("state_dict", "model", "module")
#: Keys of the ImageNet classifier (final ``norm`` and ``head``), absent from dense models.
CLASSIFIER_KEY = re.compile(r"^(norm|head)\.")
#: Keys of the dense backbones' per-output norms (``norm0``..``norm3``), absent from
#: ImageNet checkpoints: they start fresh when a dense model loads classifier weights.
DENSE_NORM_KEY = re.compile(r"^norm\d+\.")
_BACKBONE_KEY = re.compile(r"^(patch_embed|levels|layers)\.")


def unwrap(obj: object, prefix: Optional[str] = None) -> StateDict:
    """The flat tensors of a loaded checkpoint: wrappers, ``module.`` and ``backbone.`` removed.

    Args:
        obj: What a checkpoint file holds.
        prefix: Use only the keys under this prefix (e.g. ``"backbone"`` of a detector
            checkpoint, or an EMA copy), with the prefix removed.

    Raises:
        ValueError: Not a mapping, no tensors, or none under ``prefix``.
    """
    while isinstance(obj, Mapping):
        wrapper = next((k for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if wrapper is None:
            break
        obj = obj[wrapper]
    if not isinstance(obj, Mapping):
        raise ValueError(f"checkpoint is a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError("checkpoint contains no tensors")
    if prefix:
        prefix = prefix if prefix.endswith(".") else prefix + "."
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if not state:
            raise ValueError(f"no key of the checkpoint starts with {prefix!r}")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    return state


def detect(obj: object, prefix: Optional[str] = None) -> bool:
    """Whether ``obj`` holds official backbone keys (flat or wrapped, under ``prefix``)."""
    try:
        return any(_BACKBONE_KEY.match(key) for key in unwrap(obj, prefix))
    except ValueError:
        return False


def to_official(obj: object, prefix: Optional[str] = None) -> StateDict:
    """The official state dict of ``obj`` (see :func:`unwrap`)."""
    return unwrap(obj, prefix)


def from_official(state: Mapping[str, torch.Tensor]) -> StateDict:
    """A flat copy of ``state`` (the layout of the published ImageNet ``.pth`` files)."""
    return dict(state)


def drop_classifier(state: Mapping[str, torch.Tensor]) -> StateDict:
    """The state dict without the ImageNet classifier's ``norm.*`` / ``head.*``."""
    return {k: v for k, v in state.items() if not CLASSIFIER_KEY.match(k)}
