"""Glue shared by the MMDetection and MMSegmentation adapters (MMEngine only, no mmdet/mmseg).

* :mod:`.backbones`: ``NAT``, ``DiNAT``, ``DiNAT_s`` as MMEngine ``BaseModule``s,
  registered in MMEngine's root ``MODELS`` (both frameworks' registries fall back to it).
* :mod:`.optim_constructor`: Mask2Former's Detectron2 parameter groups.
* :mod:`.compat`: MMEngine 0.10.7 on torch >= 2.6 (weights-only checkpoints,
  ``.safetensors``, NA FLOP handles).
* :mod:`.runner`: crash-safe checkpoints and CPU-capable distributed set-up.
* :mod:`.cli`: the config and runner logic behind ``tools/train.py`` / ``tools/test.py``.
* :mod:`.exportable`: the module ``tools/export_onnx.py`` exports from a config (the
  backbone, or a whole segmentor's resized logits).
"""

from .backbones import NAT, DiNAT, DiNAT_s, DiNATs

__all__ = ["NAT", "DiNAT", "DiNAT_s", "DiNATs"]
