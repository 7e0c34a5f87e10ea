"""Detectron2 backbones ``D2NAT``, ``D2DiNAT`` and ``D2DiNATs`` (importing this registers them).

Select one with ``MODEL.BACKBONE.NAME: "D2DiNAT"`` after declaring the config keys with
:func:`~nattk.mask2former.config.add_dinat_config` (or ``add_nattk_config`` for all three).
"""

from __future__ import annotations

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from nattk.backbones.nat import NAT, DiNAT, DiNATs

from .backbone_mixin import D2BackboneMixin

__all__ = ["D2DiNAT", "D2DiNATs", "D2NAT"]


@BACKBONE_REGISTRY.register()
class D2NAT(D2BackboneMixin, NAT, Backbone):
    """NAT for Detectron2; reads ``cfg.MODEL.NAT``."""


@BACKBONE_REGISTRY.register()
class D2DiNAT(D2BackboneMixin, DiNAT, Backbone):
    """DiNAT for Detectron2; reads ``cfg.MODEL.DINAT`` (the official yaml keys)."""


@BACKBONE_REGISTRY.register()
class D2DiNATs(D2BackboneMixin, DiNATs, Backbone):
    """DiNAT_s for Detectron2; reads ``cfg.MODEL.DINATS``."""
