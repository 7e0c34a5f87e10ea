"""Triton kernels of fused 2-D (dilated) neighborhood attention with relative position bias.

One program per query tile of one dilation group (see :mod:`.triton_tiling`). The
layout is NATTEN's fused one, ``[B, H, W, heads, D]`` with any strides but a
contiguous last dim. Coordinates inside a kernel are *group* coordinates: group
position ``g`` of group ``r`` is map position ``r + g * d``; in them, dilated NA is
plain NA of the group's own length, and the bias index of a pair is
``(k - 1) + (key - query)`` per axis.

Map sizes, dilations and strides are runtime arguments that Triton does not
specialise on (``do_not_specialize``), so a new image size reuses the compiled
kernel; only kernel size, head dim, dtype (and whether there is a bias) pick one.

Precision: scores, softmax, log-sum-exp and every accumulator are fp32; fp32 inputs
use IEEE fp32 dot products (no TF32), fp16/bf16 inputs the tensor cores' native
fp16/bf16 x fp16/bf16 -> fp32 products.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
# The runtime ints of every kernel (map sizes, dilations, grid extents, strides).
_RUNTIME = [
    "height",
    "width",
    "dil_r",
    "dil_c",
    "tiles_r",
    "tiles_c",
    "s_b",
    "s_r",
    "s_c",
    "o_b",
    "o_r",
    "o_c",
    "l_b",
    "l_r",
    "l_c",
]


@triton.jit
def _window_start(pos, length, K: tl.constexpr):
    """First key (group coordinates) of the window of group position ``pos``."""
    return tl.minimum(tl.maximum(pos - K // 2, 0), length - K)


@triton.jit
def _first_query(key, K: tl.constexpr):
    """First group position whose window contains ``key``."""
    return tl.where(key < K, 0, key - K + 1 + K // 2)


@triton.jit
def _last_query(key, length, K: tl.constexpr):
    """Last group position whose window contains ``key``."""
    return tl.where(key >= length - K, length - 1, tl.minimum(key + K // 2, length - 1))


@triton.jit
def _tile(pid, height, width, dil_r, dil_c, tiles_r, tiles_c, TH: tl.constexpr, TW: tl.constexpr):
    """Decodes a program id into its dilation group, group lengths and tile origin."""
    tile_c = pid % tiles_c
    rest = pid // tiles_c
    grp_c = rest % dil_c
    rest = rest // dil_c
    tile_r = rest % tiles_r
    grp_r = rest // tiles_r
    len_r = (height - grp_r + dil_r - 1) // dil_r
    len_c = (width - grp_c + dil_c - 1) // dil_c
    return grp_r, grp_c, len_r, len_c, tile_r * TH, tile_c * TW


@triton.jit
def _halo(first, length, TILE: tl.constexpr, K: tl.constexpr):
    """``(start, extent)`` of the keys the windows of a tile's queries cover (0 if empty)."""
    last = tl.minimum(first + TILE, length) - 1
    start = _window_start(first, length, K)
    extent = _window_start(last, length, K) + K - start
    return start, tl.where(last >= first, extent, 0)


@triton.jit
def _inverse_halo(first, length, TILE: tl.constexpr, K: tl.constexpr):
    """``(start, extent)`` of the queries whose windows contain one of a tile's keys."""
    last = tl.minimum(first + TILE, length) - 1
    start = _first_query(first, K)
    extent = _last_query(last, length, K) + 1 - start
    return start, tl.where(last >= first, extent, 0)


@triton.jit
def _bias_and_mask(q_r, q_c, ws_r, ws_c, k_r, k_c, k_ok, KH: tl.constexpr, KW: tl.constexpr):
    """Bias-table index and in-window mask of every (query, key) pair.

    Query vectors are ``[M, 1]``-shaped and key vectors ``[1, N]``-shaped (or the
    transpose), all in group coordinates; ``ws_*`` are the queries' window starts.
    """
    t_r = k_r - ws_r
    t_c = k_c - ws_c
    inside = (t_r >= 0) & (t_r < KH) & (t_c >= 0) & (t_c < KW) & k_ok
    index = (KH - 1 + k_r - q_r) * (2 * KW - 1) + (KW - 1 + k_c - q_c)
    return index, inside


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _program_tile(
    height, width, dil_r, dil_c, tiles_r, tiles_c, heads, TH: tl.constexpr, TW: tl.constexpr
):
    """This program's tile (one dilation group), batch and head, and its points.

    Returns the group offsets and lengths, the tile's first group coordinates, batch and
    head, then each point's group coordinates ``p_r``/``p_c`` and whether it is inside
    the group (``ok``).
    """
    grp_r, grp_c, len_r, len_c, first_r, first_c = _tile(
        tl.program_id(0), height, width, dil_r, dil_c, tiles_r, tiles_c, TH, TW
    )
    bh = tl.program_id(1)
    offs = tl.arange(0, TH * TW)
    p_r = first_r + offs // TW
    p_c = first_c + offs % TW
    ok = (p_r < len_r) & (p_c < len_c)
    batch = (bh // heads).to(tl.int64)
    return grp_r, grp_c, len_r, len_c, first_r, first_c, batch, bh % heads, p_r, p_c, ok


@triton.jit
def _load_keys(
    k_ptr, v_ptr, start, n_keys, halo_r, halo_c, ext_c, grp_r, grp_c, dil_r, dil_c,
    in_head, s_r, s_c, d, d_ok, BN: tl.constexpr,
):  # fmt: skip
    """Block ``start .. start+BN`` of a halo walked in raster order: coordinates, k, v."""
    n = start + tl.arange(0, BN)
    k_ok = n < n_keys
    kg_r = halo_r + n // ext_c
    kg_c = halo_c + n % ext_c
    k_off = in_head + (grp_r + kg_r * dil_r) * s_r + (grp_c + kg_c * dil_c) * s_c
    kv_mask = k_ok[:, None] & d_ok[None, :]
    k = tl.load(k_ptr + k_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + k_off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    return k_ok, kg_r, kg_c, k, v


@triton.jit
def _block_scores(
    q, q_ok, g_r, g_c, ws_r, ws_c, k_ptr, v_ptr, rpb_head, start, n_keys, halo_r, halo_c,
    ext_c, grp_r, grp_c, dil_r, dil_c, in_head, s_r, s_c, d, d_ok, qk_scale,
    KH: tl.constexpr, KW: tl.constexpr, BN: tl.constexpr, HAS_RPB: tl.constexpr,
    IEEE: tl.constexpr,
):  # fmt: skip
    """One block of keys for a query tile: ``k, v``, rpb ``index``, ``inside`` and log2 scores.

    ``inside[i, j]``: key ``j`` is in the window of valid query ``i``; ``s`` is
    ``(scale * q.k + rpb) / ln 2`` (base-2 exponent units), undefined outside.
    """
    k_ok, kg_r, kg_c, k, v = _load_keys(
        k_ptr, v_ptr, start, n_keys, halo_r, halo_c, ext_c, grp_r, grp_c, dil_r, dil_c,
        in_head, s_r, s_c, d, d_ok, BN,
    )  # fmt: skip
    index, inside = _bias_and_mask(
        g_r[:, None], g_c[:, None], ws_r[:, None], ws_c[:, None],
        kg_r[None, :], kg_c[None, :], k_ok[None, :], KH, KW,
    )  # fmt: skip
    inside = inside & q_ok[:, None]
    s = _dot(q, tl.trans(k), IEEE) * qk_scale
    if HAS_RPB:
        s += tl.load(rpb_head + index, mask=inside, other=0.0) * LOG2E
    return k, v, index, inside, s


@triton.jit(do_not_specialize=_RUNTIME)
def na2d_fwd_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, out_ptr, lse_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, heads, head_dim, scale,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    l_b, l_r, l_c,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HAS_RPB: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """Forward: ``out = softmax(scale * q.k + rpb) v`` and the natural-log ``lse`` per query."""
    grp_r, grp_c, len_r, len_c, first_r, first_c, batch, head, g_r, g_c, q_ok = _program_tile(
        height, width, dil_r, dil_c, tiles_r, tiles_c, heads, TH, TW
    )
    ws_r = _window_start(g_r, len_r, KH)
    ws_c = _window_start(g_c, len_c, KW)
    row = grp_r + g_r * dil_r
    col = grp_c + g_c * dil_c
    d = tl.arange(0, BD)
    d_ok = d < head_dim

    in_head = batch * s_b + head * s_h
    q_off = in_head + row * s_r + col * s_c
    q = tl.load(q_ptr + q_off[:, None] + d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0)

    halo_r, ext_r = _halo(first_r, len_r, TH, KH)
    halo_c, ext_c = _halo(first_c, len_c, TW, KW)
    n_keys = ext_r * ext_c
    rpb_head = rpb_ptr + head * (2 * KH - 1) * (2 * KW - 1)

    m_i = tl.full([TH * TW], -1.0e30, tl.float32)
    l_i = tl.zeros([TH * TW], tl.float32)
    acc = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    for start in range(0, n_keys, BN):
        k, v, index, inside, s = _block_scores(
            q, q_ok, g_r, g_c, ws_r, ws_c, k_ptr, v_ptr, rpb_head, start, n_keys, halo_r,
            halo_c, ext_c, grp_r, grp_c, dil_r, dil_c, in_head, s_r, s_c, d, d_ok, qk_scale,
            KH, KW, BN, HAS_RPB, IEEE,
        )  # fmt: skip
        s = tl.where(inside, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
        m_i = m_new

    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_off = batch * o_b + head * o_h + row * o_r + col * o_c
    o_mask = q_ok[:, None] & d_ok[None, :]
    tl.store(out_ptr + o_off[:, None] + d[None, :], out.to(out_ptr.dtype.element_ty), mask=o_mask)
    lse = (m_i + tl.log2(l_safe)) / LOG2E
    tl.store(lse_ptr + batch * l_b + head + row * l_r + col * l_c, lse, mask=q_ok)


@triton.jit(do_not_specialize=[*_RUNTIME, "copies"])
def na2d_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, out_ptr, dout_ptr, lse_ptr, delta_ptr, dq_ptr, drpb_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, heads, head_dim, scale, copies,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    l_b, l_r, l_c,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HAS_RPB: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """Backward over a query tile: ``dq``, ``delta = rowsum(dout * out)`` and ``drpb``.

    ``drpb`` is accumulated with fp32 atomics into one of ``copies`` stripes of
    ``drpb_ptr`` (chosen by program id), summed by the caller.
    """
    grp_r, grp_c, len_r, len_c, first_r, first_c, batch, head, g_r, g_c, q_ok = _program_tile(
        height, width, dil_r, dil_c, tiles_r, tiles_c, heads, TH, TW
    )
    ws_r = _window_start(g_r, len_r, KH)
    ws_c = _window_start(g_c, len_c, KW)
    row = grp_r + g_r * dil_r
    col = grp_c + g_c * dil_c
    d = tl.arange(0, BD)
    d_ok = d < head_dim
    qd_mask = q_ok[:, None] & d_ok[None, :]

    in_head = batch * s_b + head * s_h
    q_off = in_head + row * s_r + col * s_c
    q = tl.load(q_ptr + q_off[:, None] + d[None, :], mask=qd_mask, other=0.0)
    o_off = batch * o_b + head * o_h + row * o_r + col * o_c
    dout = tl.load(dout_ptr + o_off[:, None] + d[None, :], mask=qd_mask, other=0.0)
    out = tl.load(out_ptr + o_off[:, None] + d[None, :], mask=qd_mask, other=0.0)
    delta = tl.sum(dout.to(tl.float32) * out.to(tl.float32), 1)
    l_off = batch * l_b + head + row * l_r + col * l_c
    tl.store(delta_ptr + l_off, delta, mask=q_ok)
    lse = tl.load(lse_ptr + l_off, mask=q_ok, other=0.0) * LOG2E

    halo_r, ext_r = _halo(first_r, len_r, TH, KH)
    halo_c, ext_c = _halo(first_c, len_c, TW, KW)
    n_keys = ext_r * ext_c
    table = (2 * KH - 1) * (2 * KW - 1)
    rpb_head = rpb_ptr + head * table
    drpb_head = drpb_ptr + ((tl.program_id(0) % copies) * heads + head) * table

    dq = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    for start in range(0, n_keys, BN):
        k, v, index, inside, s = _block_scores(
            q, q_ok, g_r, g_c, ws_r, ws_c, k_ptr, v_ptr, rpb_head, start, n_keys, halo_r,
            halo_c, ext_c, grp_r, grp_c, dil_r, dil_c, in_head, s_r, s_c, d, d_ok, qk_scale,
            KH, KW, BN, HAS_RPB, IEEE,
        )  # fmt: skip
        p = tl.where(inside, tl.exp2(s - lse[:, None]), 0.0)
        dp = _dot(dout, tl.trans(v), IEEE)
        ds = p * (dp - delta[:, None])
        if HAS_RPB:
            tl.atomic_add(drpb_head + index, ds, mask=inside, sem="relaxed")
        dq += _dot(ds.to(k.dtype), k, IEEE)

    tl.store(
        dq_ptr + o_off[:, None] + d[None, :], (dq * scale).to(dq_ptr.dtype.element_ty), mask=qd_mask
    )


@triton.jit(do_not_specialize=_RUNTIME)
def na2d_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, heads, head_dim, scale,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    l_b, l_r, l_c,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HAS_RPB: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """Backward over a key tile: ``dk`` and ``dv`` from the queries whose windows hold its keys."""
    grp_r, grp_c, len_r, len_c, first_r, first_c, batch, head, kg_r, kg_c, k_ok = _program_tile(
        height, width, dil_r, dil_c, tiles_r, tiles_c, heads, TH, TW
    )
    row = grp_r + kg_r * dil_r
    col = grp_c + kg_c * dil_c
    d = tl.arange(0, BD)
    d_ok = d < head_dim
    kd_mask = k_ok[:, None] & d_ok[None, :]

    in_head = batch * s_b + head * s_h
    k_off = in_head + row * s_r + col * s_c
    k = tl.load(k_ptr + k_off[:, None] + d[None, :], mask=kd_mask, other=0.0)
    v = tl.load(v_ptr + k_off[:, None] + d[None, :], mask=kd_mask, other=0.0)

    first_q_r, ext_r = _inverse_halo(first_r, len_r, TH, KH)
    first_q_c, ext_c = _inverse_halo(first_c, len_c, TW, KW)
    n_queries = ext_r * ext_c
    rpb_head = rpb_ptr + head * (2 * KH - 1) * (2 * KW - 1)

    dk = tl.zeros([TH * TW, BD], tl.float32)
    dv = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    for start in range(0, n_queries, BN):
        m = start + tl.arange(0, BN)
        m_ok = m < n_queries
        qg_r = first_q_r + m // ext_c
        qg_c = first_q_c + m % ext_c
        q_row = grp_r + qg_r * dil_r
        q_col = grp_c + qg_c * dil_c
        qd_mask = m_ok[:, None] & d_ok[None, :]
        q_off = in_head + q_row * s_r + q_col * s_c
        q = tl.load(q_ptr + q_off[:, None] + d[None, :], mask=qd_mask, other=0.0)
        o_off = batch * o_b + head * o_h + q_row * o_r + q_col * o_c
        dout = tl.load(dout_ptr + o_off[:, None] + d[None, :], mask=qd_mask, other=0.0)
        l_off = batch * l_b + head + q_row * l_r + q_col * l_c
        lse = tl.load(lse_ptr + l_off, mask=m_ok, other=0.0) * LOG2E
        delta = tl.load(delta_ptr + l_off, mask=m_ok, other=0.0)

        # Transposed pairs: keys along dim 0, queries along dim 1.
        index, inside = _bias_and_mask(
            qg_r[None, :], qg_c[None, :],
            _window_start(qg_r, len_r, KH)[None, :], _window_start(qg_c, len_c, KW)[None, :],
            kg_r[:, None], kg_c[:, None], k_ok[:, None] & m_ok[None, :], KH, KW,
        )  # fmt: skip
        s = _dot(k, tl.trans(q), IEEE) * qk_scale
        if HAS_RPB:
            s += tl.load(rpb_head + index, mask=inside, other=0.0) * LOG2E
        p = tl.where(inside, tl.exp2(s - lse[None, :]), 0.0)
        dv += _dot(p.to(dout.dtype), dout, IEEE)
        dp = _dot(v, tl.trans(dout), IEEE)
        ds = p * (dp - delta[None, :])
        dk += _dot(ds.to(q.dtype), q, IEEE)

    o_off = batch * o_b + head * o_h + row * o_r + col * o_c
    tl.store(
        dk_ptr + o_off[:, None] + d[None, :], (dk * scale).to(dk_ptr.dtype.element_ty), mask=kd_mask
    )
    tl.store(dv_ptr + o_off[:, None] + d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=kd_mask)


KERNELS = {
    "forward": na2d_fwd_kernel,
    "backward_dq": na2d_bwd_dq_kernel,
    "backward_dkdv": na2d_bwd_dkdv_kernel,
}
