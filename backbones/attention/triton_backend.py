"""Fused neighborhood attention on GPUs through the Triton kernels of :mod:`.triton_kernels`.

Plain forward/backward functions with the signatures of :mod:`.torch_backend`;
:mod:`.ops` registers them as the ``triton`` implementation of ``nattk::na2d``.
The forward keeps only its output and an fp32 log-sum-exp per query; the backward
recomputes the scores (flash-attention style) in two kernels: one over query tiles
(``dq`` and the bias gradient), one over key tiles (``dk``, ``dv``).

Bias gradient: fp32 atomics, striped over :data:`DRPB_COPIES` copies of the table.
A per-tile reduction is not expressible efficiently here: a tile's pairs map to
bias entries along shifted diagonals (index ``key - query``), which has no
``tl.dot`` form and would need a pass per table entry (169 for kernel 7), several
times the cost of the scores. Atomics touch only in-window pairs; striping the
table over copies (picked by program id) divides the contention on each address.
The sum over copies is done by the caller, in fp32. Like every atomics-based
gradient, ``drpb`` is not bitwise deterministic across runs.

Runs on CUDA tensors; on CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this package is imported), which is how the
kernels are tested without a GPU.
"""

from __future__ import annotations

import importlib.util
import os
from functools import cache
from typing import Optional

import torch

from .triton_tiling import grid_size, tile_shape, tiles_per_axis

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
#: Copies of the bias-gradient table the atomics are spread over.
DRPB_COPIES = 32
#: Launch options of every kernel (also used for the ahead-of-time compile check).
NUM_WARPS = 4
NUM_STAGES = 2
#: The fused op recomputes the softmax in backward.
KEEPS_PROBS = False


@cache
def _kernels():
    from . import triton_kernels

    return triton_kernels


# Looked up once, without importing Triton (a plain constant for torch.compile to read).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def import_error() -> Optional[str]:
    """Why Triton cannot be used (``None`` when it is installed)."""
    return None if _TRITON_FOUND else "triton is not installed (pip install triton)"


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def unsupported_reason(x: torch.Tensor, dtype: Optional[torch.dtype] = None) -> Optional[str]:
    """Why the Triton kernels cannot serve ``x`` computed in ``dtype`` (``None`` when they can)."""
    dtype = x.dtype if dtype is None else dtype
    reason = import_error()
    if reason is not None:
        return reason
    if x.device.type != "cuda" and not (x.device.type == "cpu" and interpreting()):
        return f"tensor is on {x.device}; Triton kernels need CUDA (or TRITON_INTERPRET=1 on CPU)"
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not float16/bfloat16/float32"
    if x.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim {x.shape[-1]} is larger than {MAX_HEAD_DIM}"
    return None


def _block_dim(head_dim: int) -> int:
    return max(16, 1 << (head_dim - 1).bit_length())


def _strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    """Batch, row, column and head strides of a ``[B, H, W, heads, D]`` tensor."""
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def _shared_layout(q, k, v):
    """q, k, v with one common set of strides and a contiguous last dim."""
    strides = {x.stride() for x in (q, k, v)}
    if len(strides) == 1 and q.stride(-1) == 1:
        return q, k, v
    return q.contiguous(), k.contiguous(), v.contiguous()


class _Launch:
    """Grid, shapes and compile-time constants of one call."""

    def __init__(self, q: torch.Tensor, kernel, dilation, scale: float, has_rpb: bool) -> None:
        batch, height, width, heads, head_dim = q.shape
        tile = tile_shape(kernel)
        self.grid = (grid_size(height, width, dilation, tile), batch * heads)
        self.runtime = (
            height,
            width,
            dilation[0],
            dilation[1],
            tiles_per_axis(height, dilation[0], tile.rows),
            tiles_per_axis(width, dilation[1], tile.cols),
            heads,
            head_dim,
            scale,
        )
        self.constants = dict(
            KH=kernel[0],
            KW=kernel[1],
            TH=tile.rows,
            TW=tile.cols,
            BN=tile.block,
            BD=_block_dim(head_dim),
            HAS_RPB=has_rpb,
            IEEE=q.dtype == torch.float32,
            num_warps=NUM_WARPS,
            num_stages=NUM_STAGES,
        )
        self.device = q.device

    def __call__(self, name: str, *args):
        kernel = getattr(_kernels(), name)
        if self.device.type == "cuda":
            with torch.cuda.device(self.device):
                kernel[self.grid](*args, **self.constants)
        else:
            kernel[self.grid](*args, **self.constants)


def _rpb32(rpb: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return like if rpb is None else rpb.detach().to(torch.float32).contiguous()


def attention_forward(q, k, v, rpb, kernel, dilation, scale):
    """Fused forward ``(out, lse, probs)``; ``probs`` is empty (the backward recomputes)."""
    q, k, v = _shared_layout(q, k, v)
    launch = _Launch(q, kernel, dilation, scale, rpb is not None)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:4], dtype=torch.float32, device=q.device)
    launch(
        "na2d_fwd_kernel",
        q, k, v, _rpb32(rpb, q), out, lse,
        *launch.runtime,
        *_strides(q), *_strides(out), *lse.stride()[:3],
    )  # fmt: skip
    return out, lse, lse.new_empty(0)


def attention_backward(grad_out, q, k, v, rpb, out, lse, _probs, kernel, dilation, scale):
    """``(dq, dk, dv, drpb)`` of :func:`attention_forward`, recomputing the scores."""
    q, k, v = _shared_layout(q, k, v)
    launch = _Launch(q, kernel, dilation, scale, rpb is not None)
    grad_out, out, lse = grad_out.contiguous(), out.contiguous(), lse.contiguous()
    dq, dk, dv = (torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))
    delta = torch.empty_like(lse)
    heads = q.shape[3]
    copies = max(1, min(DRPB_COPIES, launch.grid[0]))
    table = (2 * kernel[0] - 1) * (2 * kernel[1] - 1)
    drpb = torch.zeros(copies, heads, table, dtype=torch.float32, device=q.device)
    rpb32 = _rpb32(rpb, q)
    layout = (*_strides(q), *_strides(out), *lse.stride()[:3])
    launch(
        "na2d_bwd_dq_kernel",
        q, k, v, rpb32, out, grad_out, lse, delta, dq, drpb,
        *launch.runtime, copies, *layout,
    )  # fmt: skip
    launch(
        "na2d_bwd_dkdv_kernel",
        q, k, v, rpb32, grad_out, lse, delta, dk, dv,
        *launch.runtime, *layout,
    )  # fmt: skip
    drpb = None if rpb is None else drpb.sum(0).view(rpb.shape).to(rpb.dtype)
    return dq, dk, dv, drpb
