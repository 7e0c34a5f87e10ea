"""Detectron2's checkpointer reads ``.safetensors`` backbone weights (no detectron2 import here).

Detectron2's ``DetectionCheckpointer`` reads ``.pkl`` files in its model-zoo format, and
everything else with ``torch.load`` on an open file, which cannot read ``.safetensors``.
:func:`enable_safetensors_weights` sends ``MODEL.WEIGHTS=*.safetensors`` (e.g. a Hugging
Face ``model.safetensors``) through :mod:`nattk.backbones.weights`, without pickle.
"""

from __future__ import annotations

from nattk.backbones.weights import d2, read_state_dict

_PATCHED = "_nattk_reads_safetensors"
#: Deprecated name (before 0.2) of :func:`nattk.backbones.weights.d2.from_official`.
detectron2_payload = d2.from_official


def enable_safetensors_weights() -> None:
    """Lets ``DetectionCheckpointer`` load ``.safetensors`` backbone weights (idempotent).

    Raises:
        ImportError: detectron2 is not installed.
    """
    from detectron2.checkpoint import DetectionCheckpointer

    if getattr(DetectionCheckpointer, _PATCHED, False):
        return
    load_file = DetectionCheckpointer._load_file

    def _load_file(self, filename: str):
        if filename.endswith(".safetensors"):
            return d2.from_official(read_state_dict(filename))
        return load_file(self, filename)

    DetectionCheckpointer._load_file = _load_file
    setattr(DetectionCheckpointer, _PATCHED, True)
