"""Detectron2's model-zoo ``.pkl`` layout (named ``"detectron2"`` in :data:`~.layouts.LAYOUTS`): ``{"model": {name: ndarray}, "__author__": ...}``.

``matching_heuristics`` lets Detectron2's checkpointer map ``patch_embed.*`` onto
``backbone.patch_embed.*``, so backbone weights keep their official names. Mask2Former
and OneFormer's trained ``.pkl`` files hold the whole model (``backbone.*`` included).
"""

from __future__ import annotations

from typing import Mapping, Optional

import torch

from .official import unwrap

StateDict = dict[str, torch.Tensor]
NAME = "detectron2"
#: How :func:`~.layouts.write_layout` stores it (Detectron2 reads ``.pkl`` as a plain pickle).
FILE_FORMAT = "pickle"
AUTHOR = "nat-toolkit"


def _is_array(value: object) -> bool:
    """A NumPy array (told by its type, so that this module needs no numpy import)."""
    return type(value).__module__ == "numpy" and type(value).__name__ == "ndarray"


def detect(obj: object, prefix: Optional[str] = None) -> bool:
    """Whether ``obj`` is a model-zoo payload (``"model"`` holding NumPy arrays)."""
    model = obj.get("model") if isinstance(obj, Mapping) else None
    return isinstance(model, Mapping) and any(_is_array(v) for v in model.values())


def to_official(obj: Mapping, prefix: Optional[str] = None) -> StateDict:
    """The official state dict of a payload (its arrays as tensors, ``backbone.`` removed)."""
    tensors = {}
    for key, value in obj["model"].items():
        try:
            tensors[key] = torch.as_tensor(value) if _is_array(value) else value
        except TypeError as error:  # an object or structured array
            raise ValueError(f"{key}: a {value.dtype} array is not a tensor ({error})") from error
    return unwrap(tensors, prefix)


def from_official(state: Mapping[str, torch.Tensor]) -> dict:
    """Detectron2 model-zoo checkpoint of an official-layout backbone state dict.

    NumPy has no bfloat16: bf16 tensors are stored as float32, which holds every bf16
    value exactly. Other dtypes (fp16, fp32) keep theirs.

    Returns:
        ``{"model": {key: numpy array}, "__author__": "nat-toolkit",
        "matching_heuristics": True}``.
    """

    def as_numpy(value: torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()

    return {
        "model": {key: as_numpy(value) for key, value in state.items()},
        "__author__": AUTHOR,
        "matching_heuristics": True,
    }
