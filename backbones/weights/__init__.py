"""Checkpoint formats, file I/O, loading policy and published weights (torch only).

One module per layout (:mod:`.official`, :mod:`.huggingface`, :mod:`.d2` (Detectron2),
:mod:`.openmmlab_legacy`, :mod:`.toolkit`), each with ``detect`` / ``to_official`` /
``from_official``; :mod:`.io` reads and writes files (pickle refused by default);
:mod:`.load` loads a model and reports; :mod:`.rpb` resizes bias tables;
:mod:`.pretrained` is the table of published weights and :mod:`.hub` their download
cache. The OpenMMLab, Detectron2 and Hugging Face adapters and the converters only
wrap these.
"""

from .huggingface import weights_file
from .io import (
    check_checkpoint_file,
    load_checkpoint_file,
    read_safetensors,
    write_checkpoint,
)
from .layouts import LAYOUTS, detect_layout, read_checkpoint, read_state_dict, write_layout
from .load import LoadReport, load_pretrained, missing_weights_error, refuse_missing_weights
from .official import CLASSIFIER_KEY, DENSE_NORM_KEY, drop_classifier
from .pretrained import (
    PRETRAINED,
    PretrainedWeights,
    find_pretrained,
    pretrained_url,
    pretrained_weights,
)
from .rpb import checkpoint_kernel_size, resize_rpb, resize_rpb_tables

__all__ = [
    "CLASSIFIER_KEY",
    "DENSE_NORM_KEY",
    "LAYOUTS",
    "PRETRAINED",
    "LoadReport",
    "PretrainedWeights",
    "check_checkpoint_file",
    "checkpoint_kernel_size",
    "detect_layout",
    "drop_classifier",
    "find_pretrained",
    "load_checkpoint_file",
    "load_pretrained",
    "missing_weights_error",
    "pretrained_url",
    "pretrained_weights",
    "read_checkpoint",
    "read_safetensors",
    "read_state_dict",
    "refuse_missing_weights",
    "resize_rpb",
    "resize_rpb_tables",
    "weights_file",
    "write_checkpoint",
    "write_layout",
]
