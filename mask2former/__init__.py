"""Detectron2 / Mask2Former adapter of nat-toolkit.

Framework-free parts (importable without detectron2): the ``MODEL.NAT/DINAT/DINAT_S``
config keys (:mod:`.config`), the backbone mixin (:mod:`.backbone_mixin`) and the
helpers that use an upstream Mask2Former checkout (:mod:`.upstream`), ``.safetensors``
weights for Detectron2's checkpointer (:mod:`.checkpoint`; the ``.pkl`` layout itself is
:mod:`nattk.backbones.weights.d2`). Importing :mod:`nattk.mask2former.backbone`
(needs detectron2) registers ``D2NAT``, ``D2DiNAT`` and ``D2DiNAT_s`` (and the legacy
name ``D2DiNATs``) in Detectron2's ``BACKBONE_REGISTRY``; ``tools/train_m2f.py`` is the
launcher.
"""

from .config import (
    add_dinat_config,
    add_dinat_s_config,
    add_dinats_config,
    add_nat_config,
    add_nattk_config,
    backbone_kwargs,
)

__all__ = [
    "add_dinat_config",
    "add_dinat_s_config",
    "add_dinats_config",
    "add_nat_config",
    "add_nattk_config",
    "backbone_kwargs",
]
