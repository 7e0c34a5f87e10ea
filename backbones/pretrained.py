"""The published ImageNet weights of every variant, as data (timm's ``pretrained_cfg`` idea).

Configs, model zoos and converters name these files; ``tests/test_pretrained_table.py``
checks every such URL against this one table (variant, pre-training, resolution and
kernel size included), so a config cannot start a DiNAT-L kernel-11 model from a
DiNAT-S file, or from a URL that was mistyped.
"""

from __future__ import annotations

from dataclasses import dataclass

_NAT = "https://shi-labs.com/projects/nat/checkpoints/CLS/"
_IN1K = "https://shi-labs.com/projects/dinat/checkpoints/imagenet1k/"
_IN22K = "https://shi-labs.com/projects/dinat/checkpoints/imagenet22k/"


@dataclass(frozen=True)
class PretrainedWeights:
    """One published classification checkpoint.

    Attributes:
        variant: Key of :data:`~.variants.VARIANTS` (``"dinat_large"``).
        pretraining: ``"in1k"``, ``"in22k"`` or ``"in22k-ft-in1k"``.
        resolution: Training resolution (224 or 384).
        kernel_size: Kernel size of the attention (its rpb is ``2k-1`` wide).
        url: Download address.
    """

    variant: str
    pretraining: str
    resolution: int
    kernel_size: int
    url: str


def _table(*weights: PretrainedWeights) -> dict[str, PretrainedWeights]:
    table: dict[str, PretrainedWeights] = {}
    for w in weights:
        tag = f"{w.variant}.{w.pretraining}_{w.resolution}" + (
            f"_k{w.kernel_size}" if w.kernel_size != 7 else ""
        )
        table[tag] = w
    return table


#: ``"<variant>.<pretraining>_<resolution>[_k<kernel>]"`` -> weights.
PRETRAINED: dict[str, PretrainedWeights] = _table(
    *(
        PretrainedWeights(f"nat_{size}", "in1k", 224, 7, f"{_NAT}nat_{size}.pth")
        for size in ("mini", "tiny", "small", "base")
    ),
    *(
        PretrainedWeights(f"dinat_{size}", "in1k", 224, 7, f"{_IN1K}dinat_{size}_in1k_224.pth")
        for size in ("mini", "tiny", "small", "base")
    ),
    *(
        PretrainedWeights(f"dinat_s_{size}", "in1k", 224, 7, f"{_IN1K}dinat_s_{size}_in1k_224.pth")
        for size in ("tiny", "small", "base")
    ),
    PretrainedWeights("dinat_large", "in22k", 224, 7, f"{_IN22K}dinat_large_in22k_224.pth"),
    # The kernel-7 22k weights with their rpb resized bicubically from 13x13 to 21x21.
    PretrainedWeights(
        "dinat_large", "in22k", 224, 11, f"{_IN22K}dinat_large_in22k_224_11x11interp.pth"
    ),
    PretrainedWeights(
        "dinat_large", "in22k-ft-in1k", 224, 7, f"{_IN1K}dinat_large_in22k_in1k_224.pth"
    ),
    PretrainedWeights(
        "dinat_large", "in22k-ft-in1k", 384, 7, f"{_IN1K}dinat_large_in22k_in1k_384.pth"
    ),
    PretrainedWeights(
        "dinat_large", "in22k-ft-in1k", 384, 11, f"{_IN1K}dinat_large_in22k_in1k_384_11x11.pth"
    ),
    PretrainedWeights("dinat_s_large", "in22k", 224, 7, f"{_IN22K}dinat_s_large_in22k_224.pth"),
    *(
        PretrainedWeights(
            "dinat_s_large", "in22k-ft-in1k", res, 7, f"{_IN1K}dinat_s_large_in1k_{res}.pth"
        )
        for res in (224, 384)
    ),
)

_BY_URL = {w.url: w for w in PRETRAINED.values()}


def pretrained_weights(tag_or_url: str) -> PretrainedWeights:
    """Looks a checkpoint up by tag (``"dinat_tiny.in1k_224"``) or by URL.

    Raises:
        KeyError: Neither a tag nor a URL of :data:`PRETRAINED` (the message lists tags).
    """
    if tag_or_url in PRETRAINED:
        return PRETRAINED[tag_or_url]
    if tag_or_url in _BY_URL:
        return _BY_URL[tag_or_url]
    raise _unknown(tag_or_url)


def pretrained_url(tag: str) -> str:
    """The download address of a published checkpoint, by tag (``"dinat_tiny.in1k_224"``).

    Configs call it (``pretrained = pretrained_url('dinat_tiny.in1k_224')``) so that every
    URL is written once, in :data:`PRETRAINED`.

    Raises:
        KeyError: Unknown tag (the message lists the tags).
    """
    if tag not in PRETRAINED:
        raise _unknown(tag)
    return PRETRAINED[tag].url


def _unknown(name: str) -> KeyError:
    return KeyError(f"{name!r} is not a published ImageNet checkpoint; tags: {sorted(PRETRAINED)}")
