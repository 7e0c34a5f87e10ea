"""MMDetection 3.x adapter: import it (``custom_imports``) to register the toolkit's modules.

Registers the ``NAT``, ``DiNAT`` and ``DiNATs`` backbones, the
``CityscapesPanopticDataset`` and its ``CityscapesPanopticMetric``.
"""

from .backbones import NAT, DiNAT, DiNATs
from .cityscapes_panoptic import CityscapesPanopticDataset, CityscapesPanopticMetric

__all__ = ["NAT", "CityscapesPanopticDataset", "CityscapesPanopticMetric", "DiNAT", "DiNATs"]
