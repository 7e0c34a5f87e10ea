"""A reference for NATTEN 0.14–0.17's ``natten2dqkrpb`` / ``natten2dav``, from the formula.

Written directly from NATTEN's per-axis neighborhood rule (shared/reference
``neighborhood_attention.md`` §2), independently of the toolkit's operators, so that
transformers' own Nat/Dinat code can run against it where NATTEN 0.17 cannot be
installed. Layout ``[B, heads, H, W, D]``, as NATTEN's unfused ops. Torch only: the
fixture generator imports it under transformers 4.46.3 without nattk.
"""

from __future__ import annotations

import math

import torch


def window(i: int, length: int, kernel: int, dilation: int) -> list[int]:
    """Keys of query ``i`` along one axis: its dilation group's ``kernel`` nearest, shifted inwards."""
    r, g = i % dilation, i // dilation
    group_len = math.ceil((length - r) / dilation)
    start = min(max(g - kernel // 2, 0), group_len - kernel)
    return [(start + t) * dilation + r for t in range(kernel)]


def _windows(length: int, kernel: int, dilation: int, device) -> torch.Tensor:
    if length < kernel * dilation:
        raise ValueError(f"axis {length} is smaller than kernel {kernel} x dilation {dilation}")
    table = [window(i, length, kernel, dilation) for i in range(length)]
    return torch.tensor(table, dtype=torch.long, device=device)


def _gather(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``[B, h, H, W, D]`` -> ``[B, h, H, W, k*k, D]``: each query's window, row-major."""
    picked = x[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # B h H W k k D
    return picked.flatten(4, 5)


def natten2dqkrpb(query, key, rpb, kernel_size: int, dilation: int) -> torch.Tensor:
    """``query . key + rpb`` over each query's window: ``[B, heads, H, W, k*k]``."""
    height, width = query.shape[2], query.shape[3]
    rows = _windows(height, kernel_size, dilation, query.device)
    cols = _windows(width, kernel_size, dilation, query.device)
    logits = torch.einsum("bhijd,bhijnd->bhijn", query, _gather(key, rows, cols))
    if rpb is not None:
        # Bias index (k - 1) + (key - query) / dilation along each axis.
        bias_rows = kernel_size - 1 + (rows - torch.arange(height)[:, None]) // dilation
        bias_cols = kernel_size - 1 + (cols - torch.arange(width)[:, None]) // dilation
        bias = rpb[:, bias_rows[:, None, :, None], bias_cols[None, :, None, :]]
        logits = logits + bias.flatten(3, 4).to(logits.dtype)
    return logits


def natten2dav(attn, value, kernel_size: int, dilation: int) -> torch.Tensor:
    """Each query's ``attn``-weighted sum of its window's values: ``[B, heads, H, W, D]``."""
    height, width = value.shape[2], value.shape[3]
    rows = _windows(height, kernel_size, dilation, value.device)
    cols = _windows(width, kernel_size, dilation, value.device)
    return torch.einsum("bhijn,bhijnd->bhijd", attn, _gather(value, rows, cols))
