"""Deprecated: the published-weights table moved to :mod:`nattk.backbones.weights`.

Kept for configs that import ``pretrained_url`` from here; removed in a later release.
"""

import warnings

from .weights.pretrained import PRETRAINED, PretrainedWeights, pretrained_url, pretrained_weights

warnings.warn(
    "nattk.backbones.pretrained moved to nattk.backbones.weights",
    DeprecationWarning,
    stacklevel=2,
)
__all__ = ["PRETRAINED", "PretrainedWeights", "pretrained_url", "pretrained_weights"]
