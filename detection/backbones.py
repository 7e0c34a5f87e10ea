"""NAT, DiNAT and DiNAT_s as MMDetection backbones.

The classes live in :mod:`nattk.openmmlab`, registered in MMEngine's root ``MODELS``
registry, which ``mmdet.registry.MODELS`` falls back to.
"""

from nattk.openmmlab import NAT, DiNAT, DiNAT_s, DiNATs

__all__ = ["NAT", "DiNAT", "DiNAT_s", "DiNATs"]
