"""Registers NAT, DiNAT and DiNAT_s as MMDetection backbones."""

from mmdet.registry import MODELS

from nattk.backbones import NAT as _NAT
from nattk.backbones import DiNAT as _DiNAT
from nattk.backbones import DiNATs as _DiNATs
from nattk.openmmlab import openmmlab_backbone

NAT = MODELS.register_module(module=openmmlab_backbone(_NAT, __name__))
DiNAT = MODELS.register_module(module=openmmlab_backbone(_DiNAT, __name__))
DiNATs = MODELS.register_module(module=openmmlab_backbone(_DiNATs, __name__))

__all__ = ["NAT", "DiNAT", "DiNATs"]
