"""Published NAT / DiNAT / DiNAT_s variants and their dilation presets.

Every constructor builds the ImageNet classifier by default (``num_classes=1000``);
pass ``num_classes=0`` for the dense backbone, and ``dilations=<preset name>`` or an
explicit nested list for DiNAT models. Presets (exact values of the official configs):

==============  ================================================================
preset          used by
==============  ================================================================
``imagenet224``  ImageNet 224² classification (also the kernel-11 22k models)
``imagenet384``  ImageNet 384² classification, kernel 7 (Large)
``coco``         COCO Mask R-CNN / Cascade Mask R-CNN (~800 px)
``ade20k512``    ADE20K UperNet at 512²
``ade20k640``    ADE20K UperNet "640" rows (Large)
``m2f``          Mask2Former DiNAT-L, kernel 11 (all datasets)
==============  ================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

from .nat import NAT, DiNAT, DiNAT_s, NeighborhoodTransformer
from .weights.hub import load_published
from .weights.pretrained import find_pretrained


@dataclass(frozen=True)
class Variant:
    family: str  # "nat", "dinat" or "dinat_s"
    embed_dim: int
    depths: tuple
    num_heads: tuple
    mlp_ratio: float
    layer_scale: Optional[float]
    drop_path_rate: float  # ImageNet-1k value of the official recipe


_NAT, _DINAT, _DINAT_S = NAT.family, DiNAT.family, DiNAT_s.family
_NAT_DEPTHS = (3, 4, 18, 5)
_S_DEPTHS = (2, 2, 18, 2)
VARIANTS: dict[str, Variant] = {
    "nat_mini": Variant(_NAT, 64, (3, 4, 6, 5), (2, 4, 8, 16), 3.0, None, 0.2),
    "nat_tiny": Variant(_NAT, 64, _NAT_DEPTHS, (2, 4, 8, 16), 3.0, None, 0.2),
    "nat_small": Variant(_NAT, 96, _NAT_DEPTHS, (3, 6, 12, 24), 2.0, 1e-5, 0.3),
    "nat_base": Variant(_NAT, 128, _NAT_DEPTHS, (4, 8, 16, 32), 2.0, 1e-5, 0.5),
    "dinat_mini": Variant(_DINAT, 64, (3, 4, 6, 5), (2, 4, 8, 16), 3.0, None, 0.2),
    "dinat_tiny": Variant(_DINAT, 64, _NAT_DEPTHS, (2, 4, 8, 16), 3.0, None, 0.2),
    "dinat_small": Variant(_DINAT, 96, _NAT_DEPTHS, (3, 6, 12, 24), 2.0, None, 0.3),
    "dinat_base": Variant(_DINAT, 128, _NAT_DEPTHS, (4, 8, 16, 32), 2.0, 1e-5, 0.5),
    "dinat_large": Variant(_DINAT, 192, _NAT_DEPTHS, (6, 12, 24, 48), 2.0, None, 0.35),
    "dinat_s_tiny": Variant(_DINAT_S, 96, (2, 2, 6, 2), (3, 6, 12, 24), 4.0, None, 0.2),
    "dinat_s_small": Variant(_DINAT_S, 96, _S_DEPTHS, (3, 6, 12, 24), 4.0, None, 0.3),
    "dinat_s_base": Variant(_DINAT_S, 128, _S_DEPTHS, (4, 8, 16, 32), 4.0, None, 0.5),
    "dinat_s_large": Variant(_DINAT_S, 192, _S_DEPTHS, (6, 12, 24, 48), 4.0, None, 0.35),
}

_L2_640 = [1, 2, 1, 3, 1, 4, 1, 5, 1, 2, 1, 3, 1, 4, 1, 5, 1, 5]
_L2_M2F = [1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 2, 1, 3, 1, 3]
# Per level: a pattern tiled (and truncated) to the level's depth.
DILATION_PRESETS: dict[str, dict[str, list[list[int]]]] = {
    _DINAT: {
        "imagenet224": [[1, 8, 1], [1, 4, 1, 4], [1, 2], [1]],
        "imagenet384": [[1, 13, 1], [1, 6, 1, 6], [1, 3], [1]],
        "coco": [[1, 28, 1], [1, 7, 1, 14], [1, 3, 1, 5, 1, 7], [1, 3, 1, 3, 1]],
        "ade20k512": [[1, 16, 1], [1, 4, 1, 8], [1, 2, 1, 3, 1, 4], [1, 2, 1, 2, 1]],
        "ade20k640": [[1, 20, 1], [1, 5, 1, 10], _L2_640, [1, 2, 1, 2, 1]],
        "m2f": [[1, 14, 1], [1, 4, 1, 7], _L2_M2F, [1, 1, 1, 1, 1]],
    },
    _DINAT_S: {
        "imagenet224": [[1, 8], [1, 4], [1, 2], [1, 1]],
        "imagenet384": [[1, 13], [1, 6], [1, 3], [1, 1]],
        "coco": [[1, 28], [1, 14], [1, 3, 1, 5, 1, 7], [1, 3]],
        "ade20k512": [[1, 16], [1, 8], [1, 2, 1, 3, 1, 4], [1, 2]],
        "ade20k640": [[1, 20], [1, 10], _L2_640, [1, 2]],
    },
}

# NAT has dilation 1 everywhere: every preset name (it names the input size a recipe
# was made for) means dilation 1, so NAT takes the same presets as DiNAT.
DILATION_PRESETS[_NAT] = {name: [[1]] * 4 for name in DILATION_PRESETS[_DINAT]}

#: Core class of each family (the classes name their own family).
FAMILIES: dict[str, type[NeighborhoodTransformer]] = {c.family: c for c in (NAT, DiNAT, DiNAT_s)}


def dilation_preset(
    family: str, preset: str, depths, variant: Optional[str] = None
) -> list[list[int]]:
    """Expands a named preset to one dilation per block of ``depths``.

    Args:
        family: ``"nat"``, ``"dinat"`` or ``"dinat_s"``.
        preset: A name of ``DILATION_PRESETS[family]``.
        depths: Blocks per level.
        variant: The model (``"nat_mini"``). A refused NAT preset names it, since NAT's
            presets mean something else than DiNAT's; other refusals name the family.

    Raises:
        ValueError: Unknown family or preset.
    """
    table = DILATION_PRESETS.get(family)
    if table is None:
        raise ValueError(f"unknown backbone family {family!r}; choose from {sorted(FAMILIES)}")
    if preset not in table:
        nat = family == _NAT
        note = " (all mean dilation 1 for a NAT model)" if nat else ""
        raise ValueError(
            f"unknown dilation preset {preset!r} for {(nat and variant) or family}; "
            f"choose from {sorted(table)}{note}"
        )
    return [(pattern * depth)[:depth] for pattern, depth in zip(table[preset], depths)]


def variant_kwargs(
    family: str,
    arch: Optional[str] = None,
    dilations: Union[str, list, None] = None,
    **overrides,
) -> dict:
    """Constructor arguments of a family's model: published ``arch``, preset, overrides.

    The one place where a variant name and a dilation preset become numbers; the
    OpenMMLab and Detectron2 adapters and :func:`create_model` all call it.

    Args:
        family: ``"nat"``, ``"dinat"`` or ``"dinat_s"``.
        arch: Published variant of the family (``"tiny"``, ``"large"``, ...): fills
            ``embed_dim``, ``depths``, ``num_heads``, ``mlp_ratio``, ``layer_scale``.
        dilations: Preset name (expanded over ``depths``), nested list, or ``None``.
        **overrides: Any constructor argument; wins over ``arch``.

    Returns:
        Keyword arguments for ``FAMILIES[family]`` (``dilations`` included).

    Raises:
        ValueError: Unknown family, arch or preset, or a preset without depths.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; choose from {sorted(FAMILIES)}")
    options: dict = {}
    if arch is not None:
        name = f"{family}_{arch}"
        if name not in VARIANTS:
            archs = sorted(k[len(family) + 1 :] for k, v in VARIANTS.items() if v.family == family)
            raise ValueError(f"unknown arch {arch!r} for {family}; choose from {archs}")
        variant = VARIANTS[name]
        options = dict(
            embed_dim=variant.embed_dim,
            depths=list(variant.depths),
            num_heads=list(variant.num_heads),
            mlp_ratio=variant.mlp_ratio,
            layer_scale=variant.layer_scale,
        )
    options.update(overrides)
    if isinstance(dilations, str):
        if "depths" not in options:
            raise ValueError(f"dilation preset {dilations!r} needs arch or depths")
        variant = f"{family}_{arch}" if arch else None
        dilations = dilation_preset(family, dilations, options["depths"], variant)
    options["dilations"] = dilations
    return options


def create_model(
    name: str,
    num_classes: int = 1000,
    dilations: Union[str, list, None] = "imagenet224",
    pretrained: Union[bool, str] = False,
    **kwargs,
) -> NeighborhoodTransformer:
    """Builds a published variant by name, optionally with its published weights.

    Args:
        name: One of :data:`VARIANTS` (e.g. ``"dinat_tiny"``).
        num_classes: ``1000`` for the ImageNet classifier; ``0`` for the dense backbone.
        pretrained: ``False``, or which published weights to load (see
            :func:`~.weights.find_pretrained`: ``True``, ``"in1k"``, ``"in22k"``, a full
            tag). The file comes from torch.hub's cache, downloaded once if absent
            (:func:`~.weights.hub.cached_file`), and loads strictly
            (:func:`~.weights.load_pretrained`).
        dilations: Preset name or nested list. NAT has dilation 1 everywhere: every
            preset name means that, and its class refuses any other value.
        **kwargs: Any :class:`~.nat.NeighborhoodTransformer` argument
            (``kernel_size``, ``out_indices``, ``frozen_stages``, ``drop_path_rate``, ...).

    Raises:
        ValueError: Unknown variant or preset, or inconsistent arguments.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(VARIANTS)}")
    variant = VARIANTS[name]
    kwargs = {"drop_path_rate": variant.drop_path_rate, "num_classes": num_classes, **kwargs}
    arch = name[len(variant.family) + 1 :]
    model = FAMILIES[variant.family](**variant_kwargs(variant.family, arch, dilations, **kwargs))
    if pretrained:
        weights = find_pretrained(name, pretrained, kwargs.get("kernel_size"))
        load_published(model, weights)
    return model


def _constructor(name: str):
    def build(
        num_classes: int = 1000, dilations="imagenet224", **kwargs
    ) -> NeighborhoodTransformer:
        return create_model(name, num_classes=num_classes, dilations=dilations, **kwargs)

    build.__name__ = name
    build.__doc__ = f"Builds ``{name}`` (see :func:`create_model` for the arguments)."
    return build


nat_mini = _constructor("nat_mini")
nat_tiny = _constructor("nat_tiny")
nat_small = _constructor("nat_small")
nat_base = _constructor("nat_base")
dinat_mini = _constructor("dinat_mini")
dinat_tiny = _constructor("dinat_tiny")
dinat_small = _constructor("dinat_small")
dinat_base = _constructor("dinat_base")
dinat_large = _constructor("dinat_large")
dinat_s_tiny = _constructor("dinat_s_tiny")
dinat_s_small = _constructor("dinat_s_small")
dinat_s_base = _constructor("dinat_s_base")
dinat_s_large = _constructor("dinat_s_large")
