"""Deprecated: checkpoint reading and loading moved to :mod:`nattk.backbones.weights`.

Removed in a later release; ``convert_hf_state_dict`` is now
``nattk.backbones.weights.huggingface.to_official``.
"""

import warnings

from .weights import (
    CLASSIFIER_KEY,
    DENSE_NORM_KEY,
    LoadReport,
    check_checkpoint_file,
    drop_classifier,
    load_checkpoint_file,
    load_pretrained,
    missing_weights_error,
    read_safetensors,
    read_state_dict,
    resize_rpb,
)
from .weights.huggingface import to_official as convert_hf_state_dict

warnings.warn(
    "nattk.backbones.checkpoint moved to nattk.backbones.weights",
    DeprecationWarning,
    stacklevel=2,
)
__all__ = [
    "CLASSIFIER_KEY",
    "DENSE_NORM_KEY",
    "LoadReport",
    "check_checkpoint_file",
    "convert_hf_state_dict",
    "drop_classifier",
    "load_checkpoint_file",
    "load_pretrained",
    "missing_weights_error",
    "read_safetensors",
    "read_state_dict",
    "resize_rpb",
]
