"""Fused neighborhood attention with relative position bias via ``flex_attention``.

The neighborhood is expressed as a block-sparse mask (``mask_mod``) and the bias as
a score modification (``score_mod``), both reading the same per-axis tables as every
other backend. Compiled on CUDA this is a fused kernel with gradients for q, k, v
and the bias table. On CPU ``flex_attention`` only runs eagerly, densely and without
backward, so the backend is offered for CUDA tensors only (the tests still use the
eager CPU path to check the mask and bias semantics).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from .indices import axis_tables

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # torch < 2.5
    create_block_mask = flex_attention = None

_compiled_flex = None


def unsupported_reason(q: torch.Tensor) -> str | None:
    """Why the flex backend cannot serve ``q`` (``None`` when it can)."""
    if flex_attention is None:
        return "torch.nn.attention.flex_attention is not available (torch < 2.5)"
    if q.device.type != "cuda":
        return "flex_attention has no backward on CPU; the flex backend needs CUDA"
    return None


@lru_cache(maxsize=256)
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


@lru_cache(maxsize=64)
def block_mask(height: int, width: int, kernel, dilation, device: torch.device):
    """The (cached) block mask of one map shape, kernel and dilation."""
    mask_mod, _, _ = _window_mods(height, width, kernel, dilation, device)
    n = height * width
    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=n, KV_LEN=n, device=device)


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
    fn = flex_attention
    if compiled:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    out = fn(to_flex(q), to_flex(k), to_flex(v), score_mod=score_mod, block_mask=mask, scale=scale)
    return out.transpose(1, 2).reshape(batch, height, width, heads, dim)
