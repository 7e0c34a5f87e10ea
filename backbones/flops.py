"""FLOP counting for neighborhood attention (fvcore / MMEngine ``FlopAnalyzer`` handles).

The published NAT/DiNAT FLOPs are fvcore-style multiply-accumulate counts in which
neighborhood attention costs ``N·k²·C`` MACs for QK plus ``N·k²·C`` for AV (N
tokens, k×k window, C channels summed over heads); dilation does not change it.
Traced with ``torch.jit``, the toolkit's operators appear as ``nattk::na2d`` (fused),
``nattk::na2d_qk`` and ``nattk::na2d_av`` nodes; :data:`NA_FLOP_HANDLES` counts
them. Register them with ``analyzer.set_op_handle(**NA_FLOP_HANDLES)`` (MMEngine and
fvcore alike).
"""

from __future__ import annotations

import math
from typing import Any


def _sizes(value: Any) -> list[int]:
    return list(value.type().sizes())


def na_qk_flop_handle(inputs: list, outputs: list) -> int:
    """MACs of QK: one ``head_dim``-long dot product per (query, head, neighbor)."""
    return math.prod(_sizes(outputs[0])) * _sizes(inputs[0])[-1]


def na_av_flop_handle(inputs: list, outputs: list) -> int:
    """MACs of AV: one ``head_dim``-long axpy per (query, head, neighbor)."""
    return math.prod(_sizes(inputs[0])) * _sizes(inputs[1])[-1]


def _int_list(value: Any) -> list[int]:
    """The constant int list of a traced argument (a constant or a ListConstruct of constants)."""
    constant = value.toIValue()
    if constant is not None:
        return list(constant)
    return [int(item.toIValue()) for item in value.node().inputs()]


def na_fused_flop_handle(inputs: list, outputs: list) -> int:
    """MACs of the fused op: QK plus AV, ``2 * N * heads * K * head_dim``."""
    n_keys = math.prod(_int_list(inputs[4]))  # kernel_size
    return 2 * math.prod(_sizes(outputs[0])) * n_keys


NA_FLOP_HANDLES = {
    "nattk::na2d": na_fused_flop_handle,
    "nattk::na2d_qk": na_qk_flop_handle,
    "nattk::na2d_av": na_av_flop_handle,
}
