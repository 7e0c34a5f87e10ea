"""Deprecated: :func:`atomic_output` moved to :mod:`nattk.backbones.weights.files`."""

import warnings

from .weights.files import atomic_output

warnings.warn(
    "nattk.backbones.files moved to nattk.backbones.weights.files",
    DeprecationWarning,
    stacklevel=2,
)
__all__ = ["atomic_output"]
