"""MMDetection 3.x adapter: import it (``custom_imports``) to register the toolkit's modules.

Registers the ``NAT``, ``DiNAT`` and ``DiNAT_s`` backbones, the
``CityscapesPanopticDataset`` and its ``CityscapesPanopticMetric``, Mask2Former's
Detectron2 recipe pieces (``Detectron2OptimWrapperConstructor``, ``ColorAugSSD``,
``RandomCropKeepEmpty``) and the semantic output of panoptic Mask2Former
(``Mask2FormerWithSemSeg``, ``MaskFormerFusionHeadWithSemSeg``).
"""

from nattk.openmmlab.optim_constructor import Detectron2OptimWrapperConstructor

from .backbones import NAT, DiNAT, DiNAT_s, DiNATs
from .cityscapes_panoptic import CityscapesPanopticDataset, CityscapesPanopticMetric
from .semantic_output import Mask2FormerWithSemSeg, MaskFormerFusionHeadWithSemSeg
from .transforms import ColorAugSSD, RandomCropKeepEmpty

__all__ = [
    "NAT",
    "CityscapesPanopticDataset",
    "CityscapesPanopticMetric",
    "ColorAugSSD",
    "DiNAT",
    "DiNAT_s",
    "DiNATs",
    "Detectron2OptimWrapperConstructor",
    "Mask2FormerWithSemSeg",
    "MaskFormerFusionHeadWithSemSeg",
    "RandomCropKeepEmpty",
]
