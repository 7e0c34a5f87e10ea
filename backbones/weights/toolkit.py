"""This toolkit's own checkpoint layout: ``{"state_dict": <official keys>, "meta": {...}}``.

What ``tools/convert_checkpoint.py --to toolkit`` writes; every adapter reads it
(``init_cfg``, ``pretrained``, ``MODEL.WEIGHTS``, ``load_pretrained``).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .official import unwrap

StateDict = dict[str, torch.Tensor]
NAME = "toolkit"
FILE_FORMAT = "torch"
CONVERTED_BY = "nat-toolkit"


def detect(obj: object, prefix: Optional[str] = None) -> bool:
    """Whether ``obj`` was written by this toolkit's converter (``meta.converted_by``)."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    return isinstance(meta, Mapping) and meta.get("converted_by") == CONVERTED_BY


def to_official(obj: Mapping, prefix: Optional[str] = None) -> StateDict:
    """The official state dict held under ``state_dict``."""
    return unwrap(obj, prefix)


def from_official(state: Mapping[str, torch.Tensor], source: str = "") -> dict:
    """``{"state_dict": state, "meta": {"source": source, "converted_by": "nat-toolkit"}}``."""
    return {"state_dict": dict(state), "meta": {"source": source, "converted_by": CONVERTED_BY}}
