"""MMSegmentation 1.x adapter: import it (``custom_imports``) to register the backbones.

Registers ``NAT``, ``DiNAT`` and ``DiNATs`` (see :mod:`nattk.openmmlab`). Nothing here
imports MMDetection.
"""

from .backbones import NAT, DiNAT, DiNATs

__all__ = ["NAT", "DiNAT", "DiNATs"]
