"""Detectron2 config keys of the NAT / DiNAT / DiNAT_s backbones (no detectron2 import).

``add_dinat_config(cfg)`` declares ``cfg.MODEL.DINAT.*`` with the keys and defaults of
the official ``train_m2f.py``, so the published yamls merge unchanged. Three keys are
new: ``LAYER_SCALE`` and ``FROZEN_STAGES`` (the official adapter silently ignored both)
and ``WITH_CP`` (gradient checkpointing), plus ``ALLOW_MISSING_WEIGHTS`` (see
:class:`~nattk.mask2former.backbone_mixin.D2BackboneMixin`).

The functions take any yacs-style ``CfgNode`` (detectron2's, fvcore's or yacs'): new
nodes are created with ``type(cfg)()``.
"""

from __future__ import annotations

from typing import Any

from nattk.backbones.nat import NAT, DiNAT, DiNATs
from nattk.backbones.variants import DILATION_PRESETS, FAMILIES, variant_kwargs

#: ``cfg.MODEL.<key>`` read by each backbone family: the core class name in capitals
#: (``NAT``, ``DINAT``, ``DINATS``), the keys of the official ``add_dinat_config``.
CONFIG_KEYS = {family: cls.__name__.upper() for family, cls in FAMILIES.items()}

#: Detectron2 feature names of the four levels (strides 4, 8, 16, 32).
FEATURE_NAMES = ("res2", "res3", "res4", "res5")

# Defaults of the official `add_dinat_config` (DiNAT-L widths, kernel 7); NAT and DiNAT_s
# share them so that a yaml reads the same whichever family it selects.
_COMMON_DEFAULTS: dict[str, Any] = {
    "EMBED_DIM": 192,
    "DEPTHS": [3, 4, 18, 5],
    "NUM_HEADS": [6, 12, 24, 48],
    "KERNEL_SIZE": 7,
    "MLP_RATIO": 2.0,
    "QKV_BIAS": True,
    "QK_SCALE": None,
    "DROP_RATE": 0.0,
    "ATTN_DROP_RATE": 0.0,
    "DROP_PATH_RATE": 0.3,
    "OUT_FEATURES": list(FEATURE_NAMES),
    # Not in the official adapter:
    "LAYER_SCALE": None,
    "FROZEN_STAGES": -1,
    "WITH_CP": False,
    "ALLOW_MISSING_WEIGHTS": False,
}


def _add_config(cfg, family: str) -> None:
    node = type(cfg)()
    for key, value in _COMMON_DEFAULTS.items():
        setattr(node, key, list(value) if isinstance(value, list) else value)
    if family != NAT.family:
        # A list per level, or a preset name of nattk.backbones.variants ("m2f", "coco").
        node.DILATIONS = None
    setattr(cfg.MODEL, CONFIG_KEYS[family], node)


def add_nat_config(cfg) -> None:
    """Declares ``cfg.MODEL.NAT.*`` (selected by ``MODEL.BACKBONE.NAME: "D2NAT"``)."""
    _add_config(cfg, NAT.family)


def add_dinat_config(cfg) -> None:
    """Declares ``cfg.MODEL.DINAT.*`` exactly as the official ``train_m2f.py`` (plus four keys)."""
    _add_config(cfg, DiNAT.family)


def add_dinats_config(cfg) -> None:
    """Declares ``cfg.MODEL.DINATS.*`` (selected by ``MODEL.BACKBONE.NAME: "D2DiNATs"``)."""
    _add_config(cfg, DiNATs.family)


def add_nattk_config(cfg) -> None:
    """Declares the keys of all three families (what the launcher calls)."""
    for family in CONFIG_KEYS:
        _add_config(cfg, family)


def out_indices_from_features(out_features) -> list[int]:
    """Maps ``["res2", ..., "res5"]`` to level indices ``[0, ..., 3]``.

    Raises:
        ValueError: Unknown or repeated names, or an empty list.
    """
    names = list(out_features)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        raise ValueError(
            f"OUT_FEATURES must be distinct names from {list(FEATURE_NAMES)}, got {names}"
        )
    return sorted(FEATURE_NAMES.index(n) for n in names)


def _dilations(node, family: str):
    if family == NAT.family:
        return None
    value = node.DILATIONS
    if value is None:
        raise ValueError(
            f"MODEL.{CONFIG_KEYS[family]}.DILATIONS is not set: give one list of dilations "
            f"per level, or a preset name from {sorted(DILATION_PRESETS[family])} (the "
            "published Mask2Former yamls use the 'm2f' values)"
        )
    return value if isinstance(value, str) else [list(level) for level in value]


def backbone_kwargs(node, family: str, in_chans: int = 3) -> dict:
    """Core-constructor arguments from ``cfg.MODEL.<NAT|DINAT|DINATS>``.

    Args:
        node: The family's config node (attribute access, as declared by ``add_*_config``).
        family: ``"nat"``, ``"dinat"`` or ``"dinat_s"``.
        in_chans: Input channels (Detectron2's ``input_shape.channels``).

    Returns:
        Keyword arguments of :class:`~nattk.backbones.nat.NeighborhoodTransformer`.

    Raises:
        ValueError: Unknown family, unset DiNAT dilations or bad ``OUT_FEATURES``.
    """
    if family not in CONFIG_KEYS:
        raise ValueError(f"unknown backbone family {family!r}; choose from {list(CONFIG_KEYS)}")
    return variant_kwargs(
        family,
        dilations=_dilations(node, family),
        embed_dim=int(node.EMBED_DIM),
        depths=[int(d) for d in node.DEPTHS],
        num_heads=[int(h) for h in node.NUM_HEADS],
        kernel_size=int(node.KERNEL_SIZE),
        mlp_ratio=float(node.MLP_RATIO),
        layer_scale=None if node.LAYER_SCALE is None else float(node.LAYER_SCALE),
        in_chans=in_chans,
        num_classes=0,
        out_indices=out_indices_from_features(node.OUT_FEATURES),
        frozen_stages=int(node.FROZEN_STAGES),
        drop_rate=float(node.DROP_RATE),
        attn_drop_rate=float(node.ATTN_DROP_RATE),
        drop_path_rate=float(node.DROP_PATH_RATE),
        qkv_bias=bool(node.QKV_BIAS),
        qk_scale=None if node.QK_SCALE is None else float(node.QK_SCALE),
        with_cp=bool(node.WITH_CP),
    )
