"""The published ImageNet weights of every variant, as data (timm's ``pretrained_cfg`` idea).

Each entry carries its variant, pre-training, resolution, kernel size, layout and URL.
Configs, model zoos and converters name these files; ``tests/test_pretrained_table.py``
checks every such URL against this one table, so a config cannot start a DiNAT-L
kernel-11 model from a DiNAT-S file, or from a URL that was mistyped.
:func:`find_pretrained` picks the entry ``create_model(name, pretrained=...)`` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

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
        layout: The file's layout (a name of :data:`~.layouts.LAYOUTS`).
    """

    variant: str
    pretraining: str
    resolution: int
    kernel_size: int
    url: str
    layout: str = "official"

    @property
    def tag(self) -> str:
        """``"<variant>.<pretraining>_<resolution>[_k<kernel>]"``, its key in :data:`PRETRAINED`."""
        kernel = f"_k{self.kernel_size}" if self.kernel_size != 7 else ""
        return f"{self.variant}.{self.pretraining}_{self.resolution}{kernel}"


def _table(*weights: PretrainedWeights) -> dict[str, PretrainedWeights]:
    return {w.tag: w for w in weights}


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


def find_pretrained(
    variant: str, pretrained: Union[bool, str], kernel_size: Optional[int] = None
) -> PretrainedWeights:
    """The published weights ``create_model(variant, pretrained=...)`` means.

    Args:
        variant: Key of :data:`~.variants.VARIANTS` (``"dinat_tiny"``).
        pretrained: ``True`` (the variant's only, or its ImageNet-1k 224 px, weights), a
            pre-training with optional resolution (``"in1k"``, ``"in22k"``,
            ``"in22k-ft-in1k_384"``) or a full tag (``"dinat_large.in22k_224_k11"``).
        kernel_size: The model's kernel size; ``None`` means 7. Weights made for it are
            preferred; other weights are still found (their rpb is resized on loading).

    Raises:
        KeyError: No entry, or several that the arguments do not tell apart (the message
            lists the variant's tags).
    """
    if isinstance(pretrained, str) and pretrained in PRETRAINED:
        if PRETRAINED[pretrained].variant != variant:
            raise KeyError(
                f"pretrained={pretrained!r} holds {PRETRAINED[pretrained].variant} weights, not {variant}"
            )
        return PRETRAINED[pretrained]
    candidates = [w for w in PRETRAINED.values() if w.variant == variant]
    if isinstance(pretrained, str):
        training, _, resolution = pretrained.partition("_")
        candidates = [
            w
            for w in candidates
            if w.pretraining == training and (not resolution or str(w.resolution) == resolution)
        ]
    else:  # True: an ImageNet-1k classifier first (the head of a 22k file has 21841 classes)
        for training in ("in1k", "in22k-ft-in1k", "in22k"):
            if any(w.pretraining == training for w in candidates):
                candidates = [w for w in candidates if w.pretraining == training]
                break
    # Then weights made for the model's kernel (others would have their rpb resized), then
    # the 224 px ones.
    kernel = kernel_size or 7
    candidates = [w for w in candidates if w.kernel_size == kernel] or candidates
    candidates = [w for w in candidates if w.resolution == 224] or candidates
    if len(candidates) != 1:
        tags = sorted(w.tag for w in PRETRAINED.values() if w.variant == variant)
        found = "several" if candidates else "none"
        raise KeyError(
            f"pretrained={pretrained!r} for {variant}: {found} of its published weights "
            f"match; name one of {tags or 'none (no published weights)'}"
        )
    return candidates[0]
