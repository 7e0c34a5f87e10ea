"""Detectron2 backbones ``D2NAT``, ``D2DiNAT`` and ``D2DiNAT_s`` (importing this registers them).

Select one with ``MODEL.BACKBONE.NAME: "D2DiNAT"`` after declaring the config keys with
:func:`~nattk.mask2former.config.add_dinat_config` (or ``add_nattk_config`` for all three).
"""

from __future__ import annotations

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from nattk.backbones.nat import NAT, DiNAT, DiNAT_s

from .backbone_mixin import D2BackboneMixin

__all__ = ["D2DiNAT", "D2DiNAT_s", "D2DiNATs", "D2NAT"]


@BACKBONE_REGISTRY.register()
class D2NAT(D2BackboneMixin, NAT, Backbone):
    """NAT for Detectron2; reads ``cfg.MODEL.NAT``."""


@BACKBONE_REGISTRY.register()
class D2DiNAT(D2BackboneMixin, DiNAT, Backbone):
    """DiNAT for Detectron2; reads ``cfg.MODEL.DINAT`` (the official yaml keys)."""


@BACKBONE_REGISTRY.register()
class D2DiNAT_s(D2BackboneMixin, DiNAT_s, Backbone):  # noqa: N801 - the original's name
    """DiNAT_s for Detectron2; reads ``cfg.MODEL.DINAT_S``."""


@BACKBONE_REGISTRY.register()
class D2DiNATs(D2DiNAT_s):
    """The name before 0.2 (``MODEL.BACKBONE.NAME: "D2DiNATs"``); reads ``cfg.MODEL.DINATS``."""

    config_node = "DINATS"
