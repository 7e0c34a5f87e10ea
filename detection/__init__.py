"""MMDetection 3.x adapter: import it (``custom_imports``) to register the toolkit's modules.

Registers the ``NAT``, ``DiNAT`` and ``DiNATs`` backbones and the
``CityscapesPanopticDataset`` in MMDetection's registries.
"""

from .backbones import NAT, DiNAT, DiNATs

__all__ = ["NAT", "DiNAT", "DiNATs"]
