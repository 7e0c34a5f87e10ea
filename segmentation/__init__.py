"""MMSegmentation 1.x adapter: import it (``custom_imports``) to register the toolkit's modules.

Registers ``NAT``, ``DiNAT`` and ``DiNAT_s`` (see :mod:`nattk.openmmlab`),
Mask2Former's Detectron2 optimiser rule (``Detectron2OptimWrapperConstructor``) and
its test-time-augmentation merge (``MeanScoreSegTTAModel``). Nothing here imports
MMDetection.
"""

from nattk.openmmlab.optim_constructor import Detectron2OptimWrapperConstructor

from .backbones import NAT, DiNAT, DiNAT_s, DiNATs
from .tta import MeanScoreSegTTAModel

__all__ = [
    "NAT",
    "DiNAT",
    "DiNAT_s",
    "DiNATs",
    "Detectron2OptimWrapperConstructor",
    "MeanScoreSegTTAModel",
]
