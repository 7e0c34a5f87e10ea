"""FLOP counting for neighborhood attention (fvcore / MMEngine ``FlopAnalyzer`` handles).

The published NAT/DiNAT FLOPs are fvcore-style multiply-accumulate counts in which
neighborhood attention costs ``N·k²·C`` MACs for QK plus ``N·k²·C`` for AV (N
tokens, k×k window, C channels summed over heads); dilation does not change it.
Traced with ``torch.jit``, the toolkit's QK and AV operators appear as
``prim::PythonOp.<Function>`` nodes; :data:`NA_FLOP_HANDLES` counts them. Register
them with ``analyzer.set_op_handle(**NA_FLOP_HANDLES)`` (MMEngine and fvcore alike).
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


NA_FLOP_HANDLES = {
    "prim::PythonOp.CpuQK": na_qk_flop_handle,
    "prim::PythonOp.TorchQK": na_qk_flop_handle,
    "prim::PythonOp.CpuAV": na_av_flop_handle,
    "prim::PythonOp.TorchAV": na_av_flop_handle,
}
