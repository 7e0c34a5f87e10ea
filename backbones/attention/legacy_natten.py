"""NATTEN 0.14–0.17's 2-D functional API on this toolkit's operators.

Code written against ``natten.functional`` (transformers' Nat/Dinat, the official
NAT/DiNAT classification code) changes one import line::

    from natten.functional import natten2dqkrpb, natten2dav                          # before
    from nattk.backbones.attention.legacy_natten import natten2dqkrpb, natten2dav      # after

Every function takes and returns NATTEN's unfused layout ``[B, heads, H, W, ...]``
and is a thin view onto ``torch.ops.nattk.na2d_qk`` / ``na2d_av`` (which use
``[B, H, W, heads, ...]``): the tensors are permuted, never copied into another
index scheme, so the semantics are those of :mod:`.indices`. As in NATTEN, the query
is *not* scaled and ``rpb`` is added to the logits. Outputs are contiguous, as
NATTEN's were.

=============================================================  =====================
function                                                       NATTEN versions
=============================================================  =====================
``natten2dqkrpb(query, key, rpb, kernel_size, dilation)``       0.14.6 – 0.17.4
``natten2dqk(query, key, kernel_size, dilation)``               0.14.6 – 0.17.4
``natten2dav(attn, value, kernel_size, dilation)``              0.14.6 – 0.17.4
``na2d_qk(query, key, kernel_size, dilation=1, ..., rpb=None)`` 0.17
``na2d_av(attn, value, kernel_size, dilation=1, ...)``          0.17
=============================================================  =====================

What NATTEN 0.17 offered beyond this (causal masking, ``additional_keys`` /
``additional_values``) raises :class:`NotImplementedError` instead of being ignored.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .functional import IntPair
from .functional import na2d_av as _na2d_av
from .functional import na2d_qk as _na2d_qk

__all__ = ["na2d_av", "na2d_qk", "natten2dav", "natten2dqk", "natten2dqkrpb"]


def _ours(x: torch.Tensor, name: str, last: str = "dim") -> torch.Tensor:
    """``[B, heads, H, W, D]`` -> ``[B, H, W, heads, D]`` (a view)."""
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"{name} must be laid out [batch, heads, height, width, {last}] (NATTEN's 2-D "
            f"layout), got {shape}"
        )
    return x.permute(0, 2, 3, 1, 4)


def _natten(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, heads, D]`` -> contiguous ``[B, heads, H, W, D]``."""
    return x.permute(0, 3, 1, 2, 4).contiguous()


def _refuse(additional, is_causal, what: str) -> None:
    if additional is not None:
        raise NotImplementedError(f"additional_{what} (extra global tokens) are not supported")
    if is_causal not in (False, None) and (
        not isinstance(is_causal, (tuple, list)) or any(is_causal)
    ):
        raise NotImplementedError("causal neighborhood attention is not supported")


def natten2dqkrpb(
    query: torch.Tensor,
    key: torch.Tensor,
    rpb: Optional[torch.Tensor],
    kernel_size: IntPair,
    dilation: IntPair,
) -> torch.Tensor:
    """Logits ``query . key + rpb`` over each query's neighborhood.

    Args:
        query: ``[B, heads, H, W, D]``, already scaled by the caller.
        key: Shaped like ``query``.
        rpb: ``[heads, 2k-1, 2k-1]`` relative position bias, or ``None``.
        kernel_size: Odd window size (int, or a per-axis pair).
        dilation: Dilation (int, or a per-axis pair).

    Returns:
        ``[B, heads, H, W, k*k]`` logits, window slots in row-major order.
    """
    logits = _na2d_qk(
        _ours(query, "query"), _ours(key, "key"), kernel_size, dilation, rpb, scale=1.0
    )
    return _natten(logits)


def natten2dqk(
    query: torch.Tensor, key: torch.Tensor, kernel_size: IntPair, dilation: IntPair
) -> torch.Tensor:
    """:func:`natten2dqkrpb` without a bias."""
    return natten2dqkrpb(query, key, None, kernel_size, dilation)


def natten2dav(
    attn: torch.Tensor, value: torch.Tensor, kernel_size: IntPair, dilation: IntPair
) -> torch.Tensor:
    """Each query's weighted sum of its neighborhood's values.

    Args:
        attn: ``[B, heads, H, W, k*k]`` attention weights.
        value: ``[B, heads, H, W, D]``.
        kernel_size: Window size (int, or a per-axis pair).
        dilation: Dilation (int, or a per-axis pair).

    Returns:
        ``[B, heads, H, W, D]``.
    """
    out = _na2d_av(_ours(attn, "attn", "k*k"), _ours(value, "value"), kernel_size, dilation)
    return _natten(out)


def na2d_qk(
    query: torch.Tensor,
    key: torch.Tensor,
    kernel_size: IntPair,
    dilation: IntPair = 1,
    additional_keys: Optional[torch.Tensor] = None,
    is_causal: Union[bool, Sequence[bool]] = False,
    rpb: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """NATTEN 0.17's ``na2d_qk``: :func:`natten2dqkrpb` with ``rpb`` as a keyword.

    Args:
        query: ``[B, heads, H, W, D]``, already scaled by the caller.
        key: Shaped like ``query``.
        kernel_size: Odd window size (int, or a per-axis pair).
        dilation: Dilation (int, or a per-axis pair).
        additional_keys: Not supported (must be ``None``).
        is_causal: Not supported (must be false).
        rpb: ``[heads, 2k-1, 2k-1]`` relative position bias, or ``None``.

    Raises:
        NotImplementedError: ``additional_keys`` or causal masking was asked for.
    """
    _refuse(additional_keys, is_causal, "keys")
    return natten2dqkrpb(query, key, rpb, kernel_size, dilation)


def na2d_av(
    attn: torch.Tensor,
    value: torch.Tensor,
    kernel_size: IntPair,
    dilation: IntPair = 1,
    additional_values: Optional[torch.Tensor] = None,
    is_causal: Union[bool, Sequence[bool]] = False,
) -> torch.Tensor:
    """NATTEN 0.17's ``na2d_av`` (see :func:`natten2dav`).

    Args:
        attn: ``[B, heads, H, W, k*k]`` attention weights.
        value: ``[B, heads, H, W, D]``.
        kernel_size: Window size (int, or a per-axis pair).
        dilation: Dilation (int, or a per-axis pair).
        additional_values: Not supported (must be ``None``).
        is_causal: Not supported (must be false).

    Raises:
        NotImplementedError: ``additional_values`` or causal masking was asked for.
    """
    _refuse(additional_values, is_causal, "values")
    return natten2dav(attn, value, kernel_size, dilation)
