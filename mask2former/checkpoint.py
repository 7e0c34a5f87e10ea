"""Backbone weights for Detectron2: the ``.pkl`` payload and ``.safetensors`` reading.

Detectron2's ``DetectionCheckpointer`` reads ``.pkl`` files in its model-zoo format, and
everything else with ``torch.load`` on an open file, which cannot read ``.safetensors``.
:func:`detectron2_payload` builds the model-zoo payload from an official-layout state
dict (``matching_heuristics`` lets Detectron2 map ``patch_embed.*`` onto
``backbone.patch_embed.*``); :func:`enable_safetensors_weights` makes the checkpointer
read ``MODEL.WEIGHTS=*.safetensors`` (e.g. a Hugging Face ``model.safetensors``) into
that payload, without pickle. Importing this module does not import detectron2.
"""

from __future__ import annotations

from typing import Mapping

import torch

from nattk.backbones.checkpoint import read_state_dict

_PATCHED = "_nattk_reads_safetensors"


def detectron2_payload(state: Mapping[str, torch.Tensor]) -> dict:
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
        "__author__": "nat-toolkit",
        "matching_heuristics": True,
    }


def enable_safetensors_weights() -> None:
    """Lets ``DetectionCheckpointer`` load ``.safetensors`` backbone weights (idempotent).

    The file goes through :func:`nattk.backbones.checkpoint.read_state_dict` (official
    files, Hugging Face layouts) and :func:`detectron2_payload`; other files keep
    Detectron2's own reading.

    Raises:
        ImportError: detectron2 is not installed.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    if getattr(DetectionCheckpointer, _PATCHED, False):
        return
    load_file = DetectionCheckpointer._load_file

    def _load_file(self, filename: str):
        if filename.endswith(".safetensors"):
            return detectron2_payload(read_state_dict(filename))
        return load_file(self, filename)

    DetectionCheckpointer._load_file = _load_file
    setattr(DetectionCheckpointer, _PATCHED, True)
