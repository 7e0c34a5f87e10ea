"""Fused neighborhood attention with relative position bias via ``flex_attention``.

The neighborhood is expressed as a block-sparse mask (``mask_mod``) and the bias as
a score modification (``score_mod``), both reading the same per-axis tables as every
other backend. Compiled on CUDA this is a fused kernel with gradients for q, k, v
and the bias table. On CPU ``flex_attention`` only runs eagerly, densely and without
backward, so the backend is offered for CUDA tensors only (the tests still use the
eager CPU path to check the mask and bias semantics).

This backend runs only when forced (``backend="flex"``): a compiled flex call is
specialised to one map size, kernel, dilation and grad mode. Two safeguards:

* the block mask is built analytically from the per-axis tables
  (:func:`block_mask`), never from a dense ``N x N`` mask;
* the compiled call runs with ``fail_on_recompile_limit_hit``: past dynamo's
  recompile limit it raises instead of silently falling back to eager flex, which
  materialises the full score matrix.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .backend_api import Call, as_call
from .indices import axis_tables

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch < 2.5
    BlockMask = flex_attention = None

NAME = "flex"
#: Compiled per map size, kernel, dilation and grad mode: only when forced.
AUTO = False
FUSED = True
UNFUSED = False
KEEPS_PROBS = False
#: Called directly (flex_attention is itself an operator torch.compile knows).
IN_OPERATOR = False
BLOCK_SIZE = 128
_compiled_flex = None


def unsupported_reason(call: Call | torch.Tensor) -> str | None:
    """Why the flex backend cannot serve ``call`` (``None`` when it can)."""
    call = as_call(call)
    if flex_attention is None:
        return "torch.nn.attention.flex_attention is not available (torch < 2.5)"
    if call.device.type != "cuda":
        return "flex_attention has no backward on CPU; the flex backend needs CUDA"
    return None


@lru_cache(maxsize=64)
def _axis_on(length: int, kernel: int, dilation: int, device: torch.device):
    tables = axis_tables(length, kernel, dilation)
    return tables.start.to(device), tables.rpb_start.to(device)


def _window_mods(height, width, kernel, dilation, device):
    """mask_mod and a slot helper over flattened (row-major) token indices."""
    start_r, bias_r = _axis_on(height, kernel[0], dilation[0], device)
    start_c, bias_c = _axis_on(width, kernel[1], dilation[1], device)

    def slots(q_idx, kv_idx):
        # Offset of the key from the query's window start, in units of dilation.
        off_r = kv_idx // width - start_r[q_idx // width]
        off_c = kv_idx % width - start_c[q_idx % width]
        return off_r, off_c

    def mask_mod(b, h, q_idx, kv_idx):
        off_r, off_c = slots(q_idx, kv_idx)
        in_r = (off_r >= 0) & (off_r < kernel[0] * dilation[0]) & (off_r % dilation[0] == 0)
        in_c = (off_c >= 0) & (off_c < kernel[1] * dilation[1]) & (off_c % dilation[1] == 0)
        return in_r & in_c

    return mask_mod, slots, (bias_r, bias_c)


def block_layout(height: int, width: int, kernel, dilation, block_size: int = BLOCK_SIZE):
    """Which key blocks each query block touches, from the axis tables alone.

    Tokens are flattened row-major and cut into blocks of ``block_size``. For every
    query and every key row of its window, the window's columns span one contiguous
    range of flat indices; every block that range overlaps is marked (a superset of
    the blocks holding keys, which ``mask_mod`` then masks exactly). Cost:
    ``O(N * k_rows * span)`` integers and an ``n_blocks^2`` boolean, never ``N^2``.

    Returns:
        ``(kv_num_blocks [n_blocks], kv_indices [n_blocks, n_blocks])`` int32 CPU
        tensors in ``BlockMask.from_kv_blocks`` layout (touched blocks first, ascending).
    """
    n = height * width
    n_blocks = -(-n // block_size)
    rows = axis_tables(height, kernel[0], dilation[0]).key_positions()  # [H, k0]
    cols = axis_tables(width, kernel[1], dilation[1]).key_positions()  # [W, k1]
    col_lo, col_hi = cols[:, 0], cols[:, -1]
    flat_row = rows[:, None, :] * width  # [H, 1, k0]
    lo = (flat_row + col_lo[None, :, None]) // block_size  # [H, W, k0]
    hi = (flat_row + col_hi[None, :, None]) // block_size
    q_block = (torch.arange(n) // block_size).view(height, width, 1).expand_as(lo)
    touched = torch.zeros(n_blocks, n_blocks, dtype=torch.bool)
    for step in range(int((hi - lo).max()) + 1):
        kv_block = lo + step
        valid = kv_block <= hi
        touched[q_block[valid], kv_block[valid]] = True
    kv_num_blocks = touched.sum(-1, dtype=torch.int32)
    kv_indices = torch.argsort((~touched).to(torch.int8), dim=-1, stable=True).to(torch.int32)
    return kv_num_blocks, kv_indices


@lru_cache(maxsize=16)
def block_mask(height: int, width: int, kernel, dilation, device: torch.device):
    """The block mask of one map shape, kernel and dilation (built analytically, cached)."""
    mask_mod, _, _ = _window_mods(height, width, kernel, dilation, device)
    kv_num_blocks, kv_indices = block_layout(height, width, kernel, dilation)
    n = height * width
    return BlockMask.from_kv_blocks(
        kv_num_blocks[None, None].to(device),
        kv_indices[None, None].to(device),
        BLOCK_SIZE=BLOCK_SIZE,
        mask_mod=mask_mod,
        seq_lengths=(n, n),
    )


def _rpb_score_mod(rpb, height, width, kernel, dilation):
    _, slots, (bias_r, bias_c) = _window_mods(height, width, kernel, dilation, rpb.device)
    bias_w = 2 * kernel[1] - 1

    def score_mod(score, b, h, q_idx, kv_idx):
        off_r, off_c = slots(q_idx, kv_idx)
        # Masked-out pairs are evaluated too: clamp to keep the index in range.
        row = (bias_r[q_idx // width] + off_r // dilation[0]).clamp(0, 2 * kernel[0] - 2)
        col = (bias_c[q_idx % width] + off_c // dilation[1]).clamp(0, bias_w - 1)
        return score + rpb[h, row, col]

    return score_mod


def attention(q, k, v, kernel, dilation, rpb, scale, compiled: bool = True):
    """Neighborhood attention of ``[B, H, W, heads, D]`` tensors with flex_attention."""
    global _compiled_flex
    batch, height, width, heads, dim = q.shape

    def to_flex(x):
        return x.reshape(batch, height * width, heads, dim).transpose(1, 2)

    mask = block_mask(height, width, tuple(kernel), tuple(dilation), q.device)
    score_mod = None if rpb is None else _rpb_score_mod(rpb, height, width, kernel, dilation)
    args = (to_flex(q), to_flex(k), to_flex(v))
    if not compiled:
        out = flex_attention(*args, score_mod=score_mod, block_mask=mask, scale=scale)
    else:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        try:
            with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
                out = _compiled_flex(*args, score_mod=score_mod, block_mask=mask, scale=scale)
        except torch._dynamo.exc.FailOnRecompileLimitHit as exc:
            raise RuntimeError(
                "the flex backend hit torch._dynamo's recompile limit (one compilation per map "
                "size, kernel, dilation and grad mode); it refuses to fall back to eager "
                "flex_attention, which materialises the full N x N score matrix. Use the "
                "default backend, or raise torch._dynamo.config.recompile_limit"
            ) from exc
    return out.transpose(1, 2).reshape(batch, height, width, heads, dim)
