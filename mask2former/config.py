"""Detectron2 config keys of the NAT / DiNAT / DiNAT_s backbones (no detectron2 import).

``add_dinat_config(cfg)`` declares ``cfg.MODEL.DINAT.*`` with the keys and defaults of
the official ``train_m2f.py``, so the published yamls merge unchanged. Four keys are
new: ``LAYER_SCALE`` and ``FROZEN_STAGES`` (the official adapter silently ignored both),
``WITH_CP`` (gradient checkpointing) and ``ALLOW_MISSING_WEIGHTS`` (see
:class:`~nattk.mask2former.backbone_mixin.D2BackboneMixin`).

OneFormer declares its DiNAT keys under ``cfg.MODEL.DiNAT`` (mixed case; yacs keys are
case-sensitive) with two keys of its own, ``OUT_INDICES`` and ``IN_PATCH_SIZE``, and
without the four above. :func:`family_node` finds either namespace (a config that
declares both is refused) and :func:`backbone_kwargs` reads either node, defaulting the
toolkit-only keys where they are absent.

The functions take any yacs-style ``CfgNode`` (detectron2's, fvcore's or yacs'): new
nodes are created with ``type(cfg)()``.
"""

from __future__ import annotations

import re
from typing import Any, Optional

from nattk.backbones.variants import DILATION_PRESETS, variant_kwargs

#: ``cfg.MODEL.<key>`` read by each backbone family (written out: renaming a class must
#: not rename a key users type). ``DINAT`` holds the keys of the official ``add_dinat_config``.
CONFIG_KEYS = {"nat": "NAT", "dinat": "DINAT", "dinat_s": "DINAT_S"}

#: Other names a family's node has in upstream projects: OneFormer's ``MODEL.DiNAT``.
ALIASES = {"dinat": ("DiNAT",)}

#: Nodes of the names before 0.2, still declared by :func:`add_nattk_config` so that
#: older yamls merge; only the backbone of the old name (``D2DiNATs``) reads them.
LEGACY_CONFIG_KEYS = {"DINATS": "dinat_s"}

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
}
#: Keys of this toolkit that the official adapter and OneFormer do not declare, with
#: the defaults a node without them is read with.
TOOLKIT_KEYS: dict[str, Any] = {
    "LAYER_SCALE": None,
    "FROZEN_STAGES": -1,
    "WITH_CP": False,
    "ALLOW_MISSING_WEIGHTS": False,
}
#: The patch size of the core's tokenizer (two stride-2 convolutions); OneFormer declares
#: it as ``IN_PATCH_SIZE`` (and ignores it).
PATCH_SIZE = 4

#: The config key (under the family's node) behind each name the core's errors use: its
#: constructor's arguments, and ``dim``/``dilation`` of the attention layers they build.
PARAMETER_KEYS = {
    "embed_dim": "EMBED_DIM",
    "dim": "EMBED_DIM",
    "depths": "DEPTHS",
    "num_heads": "NUM_HEADS",
    "kernel_size": "KERNEL_SIZE",
    "dilations": "DILATIONS",
    "dilation": "DILATIONS",
    "mlp_ratio": "MLP_RATIO",
    "layer_scale": "LAYER_SCALE",
    "out_indices": "OUT_FEATURES",
    "frozen_stages": "FROZEN_STAGES",
    "drop_rate": "DROP_RATE",
    "attn_drop_rate": "ATTN_DROP_RATE",
    "drop_path_rate": "DROP_PATH_RATE",
    "qk_scale": "QK_SCALE",
}


def _add_config(cfg, key: str) -> None:
    node = type(cfg)()
    for name, value in {**_COMMON_DEFAULTS, **TOOLKIT_KEYS}.items():
        setattr(node, name, list(value) if isinstance(value, list) else value)
    # A list per level, or a preset name of nattk.backbones.variants ("m2f", "coco"); the
    # NAT class itself refuses any dilation other than 1.
    node.DILATIONS = None
    setattr(cfg.MODEL, key, node)


def add_nat_config(cfg) -> None:
    """Declares ``cfg.MODEL.NAT.*`` (selected by ``MODEL.BACKBONE.NAME: "D2NAT"``)."""
    _add_config(cfg, CONFIG_KEYS["nat"])


def add_dinat_config(cfg) -> None:
    """Declares ``cfg.MODEL.DINAT.*`` exactly as the official ``train_m2f.py`` (plus four keys)."""
    _add_config(cfg, CONFIG_KEYS["dinat"])


def add_dinat_s_config(cfg) -> None:
    """Declares ``cfg.MODEL.DINAT_S.*`` (selected by ``MODEL.BACKBONE.NAME: "D2DiNAT_s"``)."""
    _add_config(cfg, CONFIG_KEYS["dinat_s"])


def add_dinats_config(cfg) -> None:
    """Deprecated (the name before 0.2): declares ``cfg.MODEL.DINATS.*`` for ``D2DiNATs``."""
    _add_config(cfg, "DINATS")


def add_nattk_config(cfg) -> None:
    """Declares the keys of all three families, and the legacy ``DINATS`` (the launcher's)."""
    for key in (*CONFIG_KEYS.values(), *LEGACY_CONFIG_KEYS):
        _add_config(cfg, key)


def toolkit_option(node, key: str) -> Any:
    """``node.<key>`` for a key of :data:`TOOLKIT_KEYS`, its default where the node lacks it."""
    return node.get(key, TOOLKIT_KEYS[key])


def add_toolkit_keys(node) -> None:
    """Declares the :data:`TOOLKIT_KEYS` a node lacks (e.g. OneFormer's ``MODEL.DiNAT``)."""
    for key, value in TOOLKIT_KEYS.items():
        if key not in node:
            setattr(node, key, value)


def family_node(cfg, family: str, key: Optional[str] = None) -> tuple[str, Any]:
    """The config node a family's backbone reads, and its full name.

    ``cfg.MODEL.<NAT|DINAT|DINAT_S>``, or for DiNAT OneFormer's ``cfg.MODEL.DiNAT``;
    ``key`` names the one node to read instead (a legacy name's, e.g. ``DINATS``).

    Raises:
        ValueError: Unknown family, neither node declared, or both declared (which of
            the two a yaml meant cannot be known: declare one).
    """
    if family not in CONFIG_KEYS:
        raise ValueError(f"unknown backbone family {family!r}; choose from {list(CONFIG_KEYS)}")
    names = (key,) if key else (CONFIG_KEYS[family], *ALIASES.get(family, ()))
    declared = [name for name in names if name in cfg.MODEL]
    if not declared:
        adder = f"nattk.mask2former.add_{family}_config(cfg)"
        if key:  # a legacy node: only add_nattk_config (or add_dinats_config) declares it
            adder = "nattk.mask2former.add_nattk_config(cfg)"
        if len(names) == 1:
            raise ValueError(
                f"MODEL.{names[0]} is not declared: call {adder} before merging a yaml"
            )
        raise ValueError(
            f"neither MODEL.{names[0]} nor MODEL.{names[1]} is declared: call {adder} "
            "(or, for OneFormer yamls, OneFormer's own add_dinat_config) before merging a yaml"
        )
    if len(declared) > 1:
        raise ValueError(
            f"both MODEL.{names[0]} and MODEL.{names[1]} are declared; the backbone reads one. "
            f"Use MODEL.{names[0]} with "
            f"this toolkit's add_*_config (Mask2Former yamls) or OneFormer's MODEL.{names[1]} "
            "with OneFormer's own add_dinat_config (OneFormer yamls), not both"
        )
    return f"MODEL.{declared[0]}", cfg.MODEL[declared[0]]


def out_indices_from_features(out_features, name: str = "") -> list[int]:
    """Maps ``["res2", ..., "res5"]`` to level indices ``[0, ..., 3]``.

    Args:
        out_features: The ``OUT_FEATURES`` value.
        name: The node's full name for the error message (e.g. ``MODEL.DINAT``).

    Raises:
        ValueError: Unknown or repeated names, or an empty list.
    """
    names = list(out_features)
    unknown = [n for n in names if n not in FEATURE_NAMES]
    if unknown or not names or len(set(names)) != len(names):
        key = f"{name}.OUT_FEATURES" if name else "OUT_FEATURES"
        raise ValueError(f"{key} must be distinct names from {list(FEATURE_NAMES)}, got {names}")
    return sorted(FEATURE_NAMES.index(n) for n in names)


def _dilations(node, family: str, name: str):
    value = node.get("DILATIONS")
    if value is None and family == "nat":
        return None
    if value is None:
        raise ValueError(
            f"{name}.DILATIONS is not set: give one list of dilations "
            f"per level, or a preset name from {sorted(DILATION_PRESETS[family])} (the "
            "published Mask2Former yamls use the 'm2f' values)"
        )
    return value if isinstance(value, str) else [list(level) for level in value]


def _oneformer_keys(node, name: str, out_indices: list[int]) -> None:
    """Checks OneFormer's own keys (when present) against what the core builds."""
    patch = node.get("IN_PATCH_SIZE", PATCH_SIZE)
    if int(patch) != PATCH_SIZE:
        raise ValueError(
            f"{name}.IN_PATCH_SIZE is {patch}; NAT/DiNAT tokenize with patch size "
            f"{PATCH_SIZE} (two stride-2 convolutions), OneFormer's DiNAT ignored other values"
        )
    indices = node.get("OUT_INDICES")
    if indices is not None and sorted(int(i) for i in indices) != out_indices:
        raise ValueError(
            f"{name}.OUT_INDICES {list(indices)} and OUT_FEATURES {list(node.OUT_FEATURES)} "
            f"name different levels (OUT_FEATURES means {out_indices}); set both to the "
            "same levels, since the levels with a norm are the ones that are returned"
        )


def config_error(name: str, error: Exception) -> ValueError:
    """``error`` of the core (or of its presets) restated with the config keys at fault.

    Each name of :data:`PARAMETER_KEYS` in the message becomes ``<name>.<KEY>``, e.g.
    ``MODEL.DINAT.DILATIONS: dilations must give one value per block: ...``; a message
    naming none gets the node's name alone. Raise the result ``from error``.

    Args:
        name: The node's full name (``MODEL.DINAT``, OneFormer's ``MODEL.DiNAT``, ...).
        error: What the core raised.
    """
    words = re.findall(r"[A-Za-z_]+", str(error))
    keys = dict.fromkeys(PARAMETER_KEYS[word] for word in words if word in PARAMETER_KEYS)
    where = ", ".join(f"{name}.{key}" for key in keys) or name
    return ValueError(f"{where}: {error}")


def backbone_kwargs(node, family: str, in_chans: int = 3, name: str = "") -> dict:
    """Core-constructor arguments from a family's config node.

    Reads ``cfg.MODEL.<NAT|DINAT|DINAT_S>`` or OneFormer's ``cfg.MODEL.DiNAT`` (see
    :func:`family_node`). :data:`TOOLKIT_KEYS` a node lacks take their defaults; OneFormer's
    ``OUT_INDICES`` must name the levels of ``OUT_FEATURES`` and ``IN_PATCH_SIZE`` be 4.

    Args:
        node: The family's config node (attribute access).
        family: ``"nat"``, ``"dinat"`` or ``"dinat_s"``.
        in_chans: Input channels (Detectron2's ``input_shape.channels``).
        name: The node's full name for error messages (default ``MODEL.<CONFIG_KEY>``).

    Returns:
        Keyword arguments of :class:`~nattk.backbones.nat.NeighborhoodTransformer`.

    Raises:
        ValueError: Unknown family, unset DiNAT dilations, bad ``OUT_FEATURES``, a
            OneFormer key the core cannot honour, or an unknown dilation preset or
            unconvertible value (named by its key; see :func:`config_error`).
    """
    if family not in CONFIG_KEYS:
        raise ValueError(f"unknown backbone family {family!r}; choose from {list(CONFIG_KEYS)}")
    name = name or f"MODEL.{CONFIG_KEYS[family]}"
    out_indices = out_indices_from_features(node.OUT_FEATURES, name)
    _oneformer_keys(node, name, out_indices)
    dilations = _dilations(node, family, name)
    try:
        return _core_kwargs(node, family, dilations, in_chans, out_indices)
    except ValueError as error:  # a preset name or value the core's helpers refuse
        raise config_error(name, error) from error


def _core_kwargs(node, family: str, dilations, in_chans: int, out_indices: list[int]) -> dict:
    layer_scale = toolkit_option(node, "LAYER_SCALE")
    return variant_kwargs(
        family,
        dilations=dilations,
        embed_dim=int(node.EMBED_DIM),
        depths=[int(d) for d in node.DEPTHS],
        num_heads=[int(h) for h in node.NUM_HEADS],
        kernel_size=int(node.KERNEL_SIZE),
        mlp_ratio=float(node.MLP_RATIO),
        layer_scale=None if layer_scale is None else float(layer_scale),
        in_chans=in_chans,
        num_classes=0,
        out_indices=out_indices,
        frozen_stages=int(toolkit_option(node, "FROZEN_STAGES")),
        drop_rate=float(node.DROP_RATE),
        attn_drop_rate=float(node.ATTN_DROP_RATE),
        drop_path_rate=float(node.DROP_PATH_RATE),
        qkv_bias=bool(node.QKV_BIAS),
        qk_scale=None if node.QK_SCALE is None else float(node.QK_SCALE),
        with_cp=bool(toolkit_option(node, "WITH_CP")),
    )
