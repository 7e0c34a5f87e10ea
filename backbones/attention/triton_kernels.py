"""Triton kernels of fused 2-D (dilated) neighborhood attention with relative position bias.

One program per query tile of one dilation group and one (batch, head) (see
:mod:`.triton_tiling`); the grid is one axis, (batch, head)-major. The layout is NATTEN's
fused one, ``[B, H, W, heads, D]`` with any strides but a contiguous last dim.
Coordinates inside a kernel are *group* coordinates: group position ``g`` of group
``r`` is map position ``r + g * d``; in them, dilated NA is plain NA of the group's own
length, and the bias index of a pair is ``(k - 1) + (key - query)`` per axis.

Specialisation (what picks a compiled kernel): kernel size, head dim, dtype, whether
there is a bias, and the strides of q/k/v/out, which Triton classes as divisible by 16
(or equal to 1). Channel, head and pixel strides do not depend on the map size, and row
and batch strides are multiples of 16 whenever the channel stride is, so a new image
size, dilation or batch reuses the compiled kernel; the ``*_unaligned`` twins, used when
a row or batch stride is not a multiple of 16, leave those four strides unspecialised.
Map sizes, dilations and grid extents are never specialised. The (batch, head) base
offset of a program is 64-bit; offsets within one image are 32-bit.

The halo of a tile is walked in blocks of whole halo rows (``BN`` slots); a slot's row
and column inside its block, and everything of a pair that depends only on them (the
column half of the window test, the bias index at the first block), are computed once
per program: a block costs a scalar row offset, not a division per key.

Precision: scores, softmax, log-sum-exp and every accumulator are fp32; fp32 inputs
use IEEE fp32 dot products (no TF32), fp16/bf16 inputs the tensor cores' native
fp16/bf16 x fp16/bf16 -> fp32 products.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
# Runtime ints that Triton never specialises: map sizes, dilations, grid extents, heads
# (these vary between the layers of one model).
_RUNTIME = ["height", "width", "dil_r", "dil_c", "tiles_r", "tiles_c", "tiles", "heads"]
# Strides that depend on the map size; left unspecialised by the ``*_unaligned`` twins.
ROW_AND_BATCH_STRIDES = ["s_b", "s_r", "o_b", "o_r"]
# A column coordinate no window contains (folds the column test into the row test).
_FAR = tl.constexpr(-(1 << 20))


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
def _query_tile_interior(first_r, first_c, len_r, len_c, TH: tl.constexpr, TW: tl.constexpr,
                         KH: tl.constexpr, KW: tl.constexpr):  # fmt: skip
    """Whether every window of a query tile is unclamped (the tile and its halo are inside
    the group): then its halo starts ``K // 2`` before it and is ``T + K - 1`` long."""
    return (
        (first_r >= KH // 2)
        & (first_r + TH - 1 + (KH - 1 - KH // 2) < len_r)
        & (first_c >= KW // 2)
        & (first_c + TW - 1 + (KW - 1 - KW // 2) < len_c)
    )


@triton.jit
def _key_tile_interior(first_r, first_c, len_r, len_c, TH: tl.constexpr, TW: tl.constexpr,
                       KH: tl.constexpr, KW: tl.constexpr):  # fmt: skip
    """Whether the queries whose windows hold a key tile's keys all have unclamped
    windows (no query clamped at a border reaches the tile): then they start
    ``K - 1 - K // 2`` before the tile and span ``T + K - 1``."""
    return (
        (first_r >= KH)
        & (first_r + TH + KH <= len_r)
        & (first_c >= KW)
        & (first_c + TW + KW <= len_c)
    )


@triton.jit
def _interior_slots(IP: tl.constexpr, BN: tl.constexpr):
    """Halo row and column of each of a block's slots for an interior tile (halo width
    ``IP``, a compile-time constant: no division at run time)."""
    n = tl.arange(0, BN)
    return n // IP, n % IP


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _online_softmax(s, v, m_i, l_i, acc, IEEE: tl.constexpr):
    """One key block of the forward's online softmax (log2 scores ``s``, ``-inf`` outside
    windows): the new row maxima, row sums and output accumulator."""
    m_new = tl.maximum(m_i, tl.max(s, 1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, IEEE)
    return m_new, l_i, acc


@triton.jit
def _key_grads(p, q, v, dout, delta, dk, dv, IEEE: tl.constexpr):
    """One query block of the dk/dv kernel: ``p`` is ``[keys, queries]`` (0 outside windows)."""
    dv += _dot(p.to(dout.dtype), dout, IEEE)
    dp = _dot(v, tl.trans(dout), IEEE)
    ds = p * (dp - delta[None, :])
    dk += _dot(ds.to(q.dtype), q, IEEE)
    return dk, dv


@triton.jit
def _program(
    height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads,
    TH: tl.constexpr, TW: tl.constexpr,
):  # fmt: skip
    """This program's batch, head and tile, and its points.

    Returns batch (int64) and head, the group offsets and lengths, the tile's first
    group coordinates, then each point's group coordinates ``p_r``/``p_c``, whether it
    is inside the group (``ok``), and its map row and column.
    """
    pid = tl.program_id(0)
    bh = pid // tiles
    rest = pid - bh * tiles
    tile_c = rest % tiles_c
    rest = rest // tiles_c
    grp_c = rest % dil_c
    rest = rest // dil_c
    tile_r = rest % tiles_r
    grp_r = rest // tiles_r
    len_r = (height - grp_r + dil_r - 1) // dil_r
    len_c = (width - grp_c + dil_c - 1) // dil_c
    first_r = tile_r * TH
    first_c = tile_c * TW
    offs = tl.arange(0, TH * TW)
    p_r = first_r + offs // TW
    p_c = first_c + offs % TW
    ok = (p_r < len_r) & (p_c < len_c)
    batch = bh // heads
    head = bh - batch * heads
    row = grp_r + p_r * dil_r
    col = grp_c + p_c * dil_c
    return (batch.to(tl.int64), head, grp_r, grp_c, len_r, len_c, first_r, first_c,
            p_r, p_c, ok, row, col)  # fmt: skip


@triton.jit
def _slots(ext_c, BN: tl.constexpr):
    """Halo row and column of each of a block's ``BN`` slots, rows per block, slot mask,
    and the slots per halo row (the halo's width)."""
    pitch = tl.maximum(ext_c, 1)
    rows_per_block = BN // pitch
    n = tl.arange(0, BN)
    lr = n // pitch
    lc = n - lr * pitch
    return lr, lc, rows_per_block, lr < rows_per_block, pitch


@triton.jit
def _pair_tables(
    g_r, g_c, q_ok, ws_r, ws_c, halo_r, halo_c, lr, lc, slot_ok,
    KH: tl.constexpr, KW: tl.constexpr,
):  # fmt: skip
    """What a (query, slot) pair keeps over the key loop: its window row at the first
    block (``_FAR`` where the column or the query is out) and its bias index there."""
    key_r = halo_r + lr
    key_c = halo_c + lc
    t_c = key_c[None, :] - ws_c[:, None]
    col_in = (t_c >= 0) & (t_c < KW) & slot_ok[None, :] & q_ok[:, None]
    t_r0 = tl.where(col_in, key_r[None, :] - ws_r[:, None], _FAR)
    index0 = (KH - 1 + key_r[None, :] - g_r[:, None]) * (2 * KW - 1) + (
        KW - 1 + key_c[None, :] - g_c[:, None]
    )
    return t_r0, index0


@triton.jit
def _block_scores(
    q, k_head, v_head, rpb_head, key_off0, hb, lr, slot_ok, ext_r, t_r0, index0,
    row_step, d, d_ok, qk_scale,
    KH: tl.constexpr, KW: tl.constexpr, HAS_RPB: tl.constexpr, IEEE: tl.constexpr,
):  # fmt: skip
    """Keys of the block starting at halo row ``hb``: ``k, v``, bias ``index``, ``inside``
    and the log2 scores ``(scale * q.k + rpb) / ln 2`` (undefined outside)."""
    key_ok = slot_ok & (hb + lr < ext_r)
    off = key_off0 + hb * row_step
    kv_mask = key_ok[:, None] & d_ok[None, :]
    k = tl.load(k_head + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    v = tl.load(v_head + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
    t_r = t_r0 + hb
    inside = (t_r >= 0) & (t_r < KH)
    index = index0 + hb * (2 * KW - 1)
    s = _dot(q, tl.trans(k), IEEE) * qk_scale
    if HAS_RPB:
        s += tl.load(rpb_head + index, mask=inside, other=0.0) * LOG2E
    return k, v, inside, s


@triton.jit
def _query_side(
    height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, s_b, s_r, s_c, s_h,
    TH: tl.constexpr, TW: tl.constexpr, KH: tl.constexpr, KW: tl.constexpr,
    BN: tl.constexpr,
):  # fmt: skip
    """Everything of a query-tile program (forward, dq) that is fixed over its key loop."""
    (batch, head, grp_r, grp_c, len_r, len_c, first_r, first_c,
     g_r, g_c, q_ok, row, col) = _program(
        height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, TH, TW
    )  # fmt: skip
    ws_r = _window_start(g_r, len_r, KH)
    ws_c = _window_start(g_c, len_c, KW)
    halo_r, ext_r = _halo(first_r, len_r, TH, KH)
    halo_c, ext_c = _halo(first_c, len_c, TW, KW)
    lr, lc, rows_per_block, slot_ok, pitch = _slots(ext_c, BN)
    in_head = batch * s_b + head * s_h
    return (batch, head, grp_r, grp_c, len_r, len_c, first_r, first_c, g_r, g_c, q_ok, row,
            col, ws_r, ws_c, halo_r, halo_c, ext_r, lr, lc, rows_per_block, slot_ok, pitch,
            in_head)  # fmt: skip


@triton.jit
def _rows_of(base, hb, lr, row_step, d, TH: tl.constexpr, KH: tl.constexpr):
    """Element offsets of a block of an interior tile's halo (or inverse halo) rows.

    Rows past the halo (padding slots, the last block's tail) are clamped to its last
    row: always in the map, so the loads need no mask (the pattern's ``-inf`` drops
    them). Returns the ``[BN, BD]`` offsets and the rows.
    """
    rows = tl.minimum(hb + lr, TH + KH - 2)
    return (base + rows * row_step)[:, None] + d[None, :], rows


@triton.jit
def _load_rows(ptrs, d_ok, BD: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Loads a block of whole rows; channels are masked only past a head dim below ``BD``."""
    if BD == HEAD_DIM:
        return tl.load(ptrs)
    else:
        return tl.load(ptrs, mask=d_ok[None, :], other=0.0)


@triton.jit
def _interior_keys(
    q, k_head, v_head, pat_block, pat_offs, key_base, hb, lr, row_step, d, d_ok, qk_scale,
    TH: tl.constexpr, KH: tl.constexpr, BD: tl.constexpr, HEAD_DIM: tl.constexpr,
    IEEE: tl.constexpr,
):  # fmt: skip
    """Keys of one block of an interior tile and its log2 scores: the window mask and
    the bias come in one load of the precomputed pattern (``-inf`` outside windows)."""
    ptrs, _rows = _rows_of(key_base, hb, lr, row_step, d, TH, KH)
    k = _load_rows(k_head + ptrs, d_ok, BD, HEAD_DIM)
    v = _load_rows(v_head + ptrs, d_ok, BD, HEAD_DIM)
    s = _dot(q, tl.trans(k), IEEE) * qk_scale + tl.load(pat_block + pat_offs)
    return k, v, s


def na2d_fwd_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, pat_ptr, out_ptr, lse_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, scale,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_RPB: tl.constexpr,
    IEEE: tl.constexpr, INTERIOR: tl.constexpr, IP: tl.constexpr, IR: tl.constexpr,
    IB: tl.constexpr,
):  # fmt: skip
    """Forward: ``out = softmax(scale * q.k + rpb) v`` and the natural-log ``lse`` per query.

    ``lse`` is a contiguous ``[B, H, W, heads]`` fp32 tensor. ``pat_ptr`` is the
    interior pattern ``[heads, IB, TH * TW, BN]`` (fp32, log2 units): with ``INTERIOR``,
    an interior tile walks ``IB`` blocks of ``IR`` halo rows ``IP`` wide and adds the
    pattern instead of testing windows and gathering the bias (without it, every tile
    takes the general loop; see ``triton_tiling.interior_path``).
    """
    (batch, head, grp_r, grp_c, len_r, len_c, first_r, first_c, g_r, g_c, q_ok, row, col,
     ws_r, ws_c, halo_r, halo_c, ext_r, lr, lc, rows_per_block, slot_ok, pitch,
     in_head) = _query_side(
        height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, s_b, s_r, s_c, s_h,
        TH, TW, KH, KW, BN,
    )  # fmt: skip
    d = tl.arange(0, BD)
    d_ok = d < HEAD_DIM
    q_head = q_ptr + in_head
    pix = row * s_r + col * s_c
    q = tl.load(q_head + pix[:, None] + d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0)
    row_step = dil_r * s_r
    k_head = k_ptr + in_head
    v_head = v_ptr + in_head

    m_i = tl.full([TH * TW], -1.0e30, tl.float32)
    l_i = tl.zeros([TH * TW], tl.float32)
    acc = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    if _query_tile_interior(first_r, first_c, len_r, len_c, TH, TW, KH, KW) & INTERIOR:
        ilr, ilc = _interior_slots(IP, BN)
        key_base = (grp_r + halo_r * dil_r) * s_r + (grp_c + (halo_c + ilc) * dil_c) * s_c
        pat_head = pat_ptr + head * (IB * TH * TW * BN)
        pat_offs = tl.arange(0, TH * TW)[:, None] * BN + tl.arange(0, BN)[None, :]
        # ext_r is TH + KH - 1 here; a run-time bound keeps the loop a loop (one
        # block's code, not IB unrolled copies).
        pat_block = pat_head
        for hb in range(0, ext_r, IR):
            k, v, s = _interior_keys(
                q, k_head, v_head, pat_block, pat_offs, key_base,
                hb, ilr, row_step, d, d_ok, qk_scale, TH, KH, BD, HEAD_DIM, IEEE,
            )  # fmt: skip
            pat_block += TH * TW * BN
            m_i, l_i, acc = _online_softmax(s, v, m_i, l_i, acc, IEEE)
    else:
        t_r0, index0 = _pair_tables(
            g_r, g_c, q_ok, ws_r, ws_c, halo_r, halo_c, lr, lc, slot_ok, KH, KW
        )
        key_off0 = (grp_r + (halo_r + lr) * dil_r) * s_r + (grp_c + (halo_c + lc) * dil_c) * s_c
        rpb_head = rpb_ptr + head * (2 * KH - 1) * (2 * KW - 1)
        for hb in range(0, ext_r, rows_per_block):
            k, v, inside, s = _block_scores(
                q, k_head, v_head, rpb_head, key_off0, hb, lr, slot_ok, ext_r,
                t_r0, index0, row_step, d, d_ok, qk_scale, KH, KW, HAS_RPB, IEEE,
            )  # fmt: skip
            s = tl.where(inside, s, float("-inf"))
            m_i, l_i, acc = _online_softmax(s, v, m_i, l_i, acc, IEEE)

    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_pix = row * o_r + col * o_c
    o_head = out_ptr + batch * o_b + head * o_h
    o_mask = q_ok[:, None] & d_ok[None, :]
    tl.store(o_head + o_pix[:, None] + d[None, :], out.to(out_ptr.dtype.element_ty), mask=o_mask)
    lse = (m_i + tl.log2(l_safe)) / LOG2E
    lse_head = lse_ptr + batch * height * width * heads + head
    tl.store(lse_head + (row * width + col) * heads, lse, mask=q_ok)


def na2d_bwd_dq_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, pat_ptr, out_ptr, dout_ptr, lse_ptr, delta_ptr, dq_ptr,
    drpb_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, scale, copies,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_RPB: tl.constexpr,
    IEEE: tl.constexpr, INTERIOR: tl.constexpr, IP: tl.constexpr, IR: tl.constexpr,
    IB: tl.constexpr,
    HAS_DRPB: tl.constexpr, KKP: tl.constexpr,
):  # fmt: skip
    """Backward over a query tile: ``dq``, ``delta = rowsum(dout * out)`` and, with
    ``HAS_DRPB``, ``drpb``. Interior tiles take the forward's pattern (``pat_ptr``).

    The bias gradient is first reduced per program, in registers: each query's
    gradient per window slot (``[queries, KKP]``, ``KKP`` the window size rounded up to a
    power of two) is gathered from every key block. A tile whose windows are all
    unclamped (the interior) adds one value per window offset (``KH * KW`` atomics,
    the same bias entry for every query); a border tile adds one per query and slot.
    The atomics go to one of ``copies`` stripes of ``drpb_ptr`` (by tile), summed by
    the caller.
    """
    (batch, head, grp_r, grp_c, len_r, len_c, first_r, first_c, g_r, g_c, q_ok, row, col,
     ws_r, ws_c, halo_r, halo_c, ext_r, lr, lc, rows_per_block, slot_ok, pitch,
     in_head) = _query_side(
        height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, s_b, s_r, s_c, s_h,
        TH, TW, KH, KW, BN,
    )  # fmt: skip
    d = tl.arange(0, BD)
    d_ok = d < HEAD_DIM
    qd_mask = q_ok[:, None] & d_ok[None, :]
    pix = row * s_r + col * s_c
    q = tl.load(q_ptr + in_head + pix[:, None] + d[None, :], mask=qd_mask, other=0.0)
    o_head = batch * o_b + head * o_h
    o_pix = row * o_r + col * o_c
    dout = tl.load(dout_ptr + o_head + o_pix[:, None] + d[None, :], mask=qd_mask, other=0.0)
    out = tl.load(out_ptr + o_head + o_pix[:, None] + d[None, :], mask=qd_mask, other=0.0)
    delta = tl.sum(dout.to(tl.float32) * out.to(tl.float32), 1)
    l_head = batch * height * width * heads + head
    l_pix = (row * width + col) * heads
    tl.store(delta_ptr + l_head + l_pix, delta, mask=q_ok)
    lse = tl.load(lse_ptr + l_head + l_pix, mask=q_ok, other=0.0) * LOG2E

    table = (2 * KH - 1) * (2 * KW - 1)
    row_step = dil_r * s_r
    k_head = k_ptr + in_head
    v_head = v_ptr + in_head
    # Window slot j = (a, b) of each query: its halo slot at the first block, _FAR
    # when j is padding or the query is out (so no block ever selects it).
    j = tl.arange(0, KKP)
    a = j // KW
    b = j - a * KW
    j_ok = j < KH * KW
    w = tl.zeros([TH * TW, KKP], tl.float32)
    dq = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    interior = _query_tile_interior(first_r, first_c, len_r, len_c, TH, TW, KH, KW)
    if interior & INTERIOR:
        ilr, ilc = _interior_slots(IP, BN)
        key_base = (grp_r + halo_r * dil_r) * s_r + (grp_c + (halo_c + ilc) * dil_c) * s_c
        pat_head = pat_ptr + head * (IB * TH * TW * BN)
        pat_offs = tl.arange(0, TH * TW)[:, None] * BN + tl.arange(0, BN)[None, :]
        # Query i = (i // TW, i % TW) of the tile: slot (a, b) is halo slot
        # (i // TW + a, i % TW + b) of the IP-wide halo.
        i = tl.arange(0, TH * TW)
        slot0 = (i[:, None] // TW + a[None, :]) * IP + (i[:, None] % TW + b[None, :])
        slot0 = tl.where(j_ok[None, :], slot0, _FAR)
        # ext_r is TH + KH - 1 here; a run-time bound keeps the loop a loop (one
        # block's code, not IB unrolled copies).
        pat_block = pat_head
        for hb in range(0, ext_r, IR):
            k, v, s = _interior_keys(
                q, k_head, v_head, pat_block, pat_offs, key_base,
                hb, ilr, row_step, d, d_ok, qk_scale, TH, KH, BD, HEAD_DIM, IEEE,
            )  # fmt: skip
            pat_block += TH * TW * BN
            p = tl.exp2(s - lse[:, None])
            dp = _dot(dout, tl.trans(v), IEEE)
            ds = p * (dp - delta[:, None])
            if HAS_DRPB:
                # Slots past IR * IP hold ds = 0 (the pattern masks them): only the
                # range of a block matters, one unsigned compare; & keeps the index in it.
                slot = slot0 - hb * IP
                take = slot.to(tl.uint32) < BN
                w += tl.where(take, tl.gather(ds, slot & (BN - 1), 1), 0.0)
            dq += _dot(ds.to(k.dtype), k, IEEE)
    else:
        t_r0, index0 = _pair_tables(
            g_r, g_c, q_ok, ws_r, ws_c, halo_r, halo_c, lr, lc, slot_ok, KH, KW
        )
        key_off0 = (grp_r + (halo_r + lr) * dil_r) * s_r + (grp_c + (halo_c + lc) * dil_c) * s_c
        rpb_head = rpb_ptr + head * table
        slot0 = (ws_r[:, None] + a[None, :] - halo_r) * pitch + (
            ws_c[:, None] + b[None, :] - halo_c
        )
        slot0 = tl.where(j_ok[None, :] & q_ok[:, None], slot0, _FAR)
        block_slots = rows_per_block * pitch
        for hb in range(0, ext_r, rows_per_block):
            k, v, inside, s = _block_scores(
                q, k_head, v_head, rpb_head, key_off0, hb, lr, slot_ok, ext_r,
                t_r0, index0, row_step, d, d_ok, qk_scale, KH, KW, HAS_RPB, IEEE,
            )  # fmt: skip
            p = tl.where(inside, tl.exp2(s - lse[:, None]), 0.0)
            dp = _dot(dout, tl.trans(v), IEEE)
            ds = p * (dp - delta[:, None])
            if HAS_DRPB:
                slot = slot0 - hb * pitch
                take = (slot >= 0) & (slot < block_slots)
                w += tl.where(take, tl.gather(ds, tl.where(take, slot, 0), 1), 0.0)
            dq += _dot(ds.to(k.dtype), k, IEEE)

    tl.store(
        dq_ptr + o_head + o_pix[:, None] + d[None, :],
        (dq * scale).to(dq_ptr.dtype.element_ty),
        mask=qd_mask,
    )
    if HAS_DRPB:
        tile = tl.program_id(0) % tiles
        drpb_head = drpb_ptr + ((tile % copies) * heads + head) * table
        if interior:
            # Unclamped windows: slot (a, b) is the same bias entry for every query.
            offset = (KH - 1 - KH // 2 + a) * (2 * KW - 1) + (KW - 1 - KW // 2 + b)
            tl.atomic_add(drpb_head + offset, tl.sum(w, 0), mask=j_ok, sem="relaxed")
        else:
            entries = (KH - 1 + ws_r[:, None] + a[None, :] - g_r[:, None]) * (2 * KW - 1) + (
                KW - 1 + ws_c[:, None] + b[None, :] - g_c[:, None]
            )
            tl.atomic_add(drpb_head + entries, w, mask=j_ok[None, :] & q_ok[:, None], sem="relaxed")


def na2d_bwd_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, rpb_ptr, pat_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
    height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, scale,
    s_b, s_r, s_c, s_h,
    o_b, o_r, o_c, o_h,
    KH: tl.constexpr, KW: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr,
    BN: tl.constexpr, BD: tl.constexpr, HEAD_DIM: tl.constexpr, HAS_RPB: tl.constexpr,
    IEEE: tl.constexpr, INTERIOR: tl.constexpr, IP: tl.constexpr, IR: tl.constexpr,
    IB: tl.constexpr,
    PITCH: tl.constexpr,
):  # fmt: skip
    """Backward over a key tile: ``dk`` and ``dv`` from the queries whose windows hold its keys.

    The queries form a rectangle that near borders is wider than ``PITCH``: it is walked
    in column chunks of at most ``PITCH``, each in blocks of whole rows. An interior
    key tile's queries are ``IB`` blocks of an ``IP``-wide rectangle, and its mask and
    bias come from the transposed pattern ``pat_ptr`` (``[heads, IB, TH * TW, BN]``).
    """
    (batch, head, grp_r, grp_c, len_r, len_c, first_r, first_c,
     kg_r, kg_c, k_ok, row, col) = _program(
        height, width, dil_r, dil_c, tiles_r, tiles_c, tiles, heads, TH, TW
    )  # fmt: skip
    d = tl.arange(0, BD)
    d_ok = d < HEAD_DIM
    kd_mask = k_ok[:, None] & d_ok[None, :]
    in_head = batch * s_b + head * s_h
    pix = row * s_r + col * s_c
    k = tl.load(k_ptr + in_head + pix[:, None] + d[None, :], mask=kd_mask, other=0.0)
    v = tl.load(v_ptr + in_head + pix[:, None] + d[None, :], mask=kd_mask, other=0.0)
    o_head = batch * o_b + head * o_h
    l_head = batch * height * width * heads + head

    first_q_r, ext_r = _inverse_halo(first_r, len_r, TH, KH)
    first_q_c, ext_c = _inverse_halo(first_c, len_c, TW, KW)

    dk = tl.zeros([TH * TW, BD], tl.float32)
    dv = tl.zeros([TH * TW, BD], tl.float32)
    qk_scale = scale * LOG2E
    if _key_tile_interior(first_r, first_c, len_r, len_c, TH, TW, KH, KW) & INTERIOR:
        ilr, ilc = _interior_slots(IP, BN)
        q_col = grp_c + (first_q_c + ilc) * dil_c
        row0 = grp_r + first_q_r * dil_r
        q_base = row0 * s_r + q_col * s_c
        o_base = row0 * o_r + q_col * o_c
        l_base = l_head + (row0 * width + q_col) * heads
        pat_head = pat_ptr + head * (IB * TH * TW * BN)
        pat_offs = tl.arange(0, TH * TW)[:, None] * BN + tl.arange(0, BN)[None, :]
        pat_block = pat_head
        for hb in range(0, ext_r, IR):  # ext_r is TH + KH - 1 here (see the forward)
            q_ptrs, rows = _rows_of(q_base, hb, ilr, dil_r * s_r, d, TH, KH)
            q = _load_rows(q_ptr + in_head + q_ptrs, d_ok, BD, HEAD_DIM)
            o_ptrs = (o_base + rows * (dil_r * o_r))[:, None] + d[None, :]
            dout = _load_rows(dout_ptr + o_head + o_ptrs, d_ok, BD, HEAD_DIM)
            l_pix = l_base + rows * (dil_r * width * heads)
            lse = tl.load(lse_ptr + l_pix) * LOG2E
            delta = tl.load(delta_ptr + l_pix)
            # Transposed pairs: keys along dim 0, queries along dim 1.
            s = _dot(k, tl.trans(q), IEEE) * qk_scale
            s += tl.load(pat_block + pat_offs)
            pat_block += TH * TW * BN
            p = tl.exp2(s - lse[None, :])
            dk, dv = _key_grads(p, q, v, dout, delta, dk, dv, IEEE)
    else:
        rpb_head = rpb_ptr + head * (2 * KH - 1) * (2 * KW - 1)
        for c0 in range(0, ext_c, PITCH):
            lr, lc, rows_per_block, slot_ok, _pitch = _slots(tl.minimum(ext_c - c0, PITCH), BN)
            qg_c = first_q_c + c0 + lc
            t_c = kg_c[:, None] - _window_start(qg_c, len_c, KW)[None, :]
            col_in = (t_c >= 0) & (t_c < KW) & slot_ok[None, :] & k_ok[:, None]
            index_c = KW - 1 + kg_c[:, None] - qg_c[None, :]
            q_col = grp_c + qg_c * dil_c
            for hb in range(0, ext_r, rows_per_block):
                qg_r = first_q_r + hb + lr
                m_ok = slot_ok & (hb + lr < ext_r) & (c0 + lc < ext_c)
                q_row = grp_r + qg_r * dil_r
                qd_mask = m_ok[:, None] & d_ok[None, :]
                q_pix = q_row * s_r + q_col * s_c
                q = tl.load(q_ptr + in_head + q_pix[:, None] + d[None, :], mask=qd_mask, other=0.0)
                o_pix = q_row * o_r + q_col * o_c
                dout = tl.load(
                    dout_ptr + o_head + o_pix[:, None] + d[None, :], mask=qd_mask, other=0.0
                )
                l_pix = l_head + (q_row * width + q_col) * heads
                lse = tl.load(lse_ptr + l_pix, mask=m_ok, other=0.0) * LOG2E
                delta = tl.load(delta_ptr + l_pix, mask=m_ok, other=0.0)

                # Transposed pairs: keys along dim 0, queries along dim 1.
                t_r = kg_r[:, None] - _window_start(qg_r, len_r, KH)[None, :]
                inside = col_in & (t_r >= 0) & (t_r < KH) & m_ok[None, :]
                s = _dot(k, tl.trans(q), IEEE) * qk_scale
                if HAS_RPB:
                    index = (KH - 1 + kg_r[:, None] - qg_r[None, :]) * (2 * KW - 1) + index_c
                    s += tl.load(rpb_head + index, mask=inside, other=0.0) * LOG2E
                p = tl.where(inside, tl.exp2(s - lse[None, :]), 0.0)
                dk, dv = _key_grads(p, q, v, dout, delta, dk, dv, IEEE)

    k_pix = row * o_r + col * o_c
    tl.store(
        dk_ptr + o_head + k_pix[:, None] + d[None, :],
        (dk * scale).to(dk_ptr.dtype.element_ty),
        mask=kd_mask,
    )
    tl.store(
        dv_ptr + o_head + k_pix[:, None] + d[None, :], dv.to(dv_ptr.dtype.element_ty), mask=kd_mask
    )


def _jit_twins(fn, extra=()):
    """The kernel and its ``*_unaligned`` twin (row and batch strides unspecialised)."""
    return (
        triton.jit(fn, do_not_specialize=[*_RUNTIME, *extra]),
        triton.jit(fn, do_not_specialize=[*_RUNTIME, *ROW_AND_BATCH_STRIDES, *extra]),
    )


na2d_fwd_kernel, na2d_fwd_kernel_unaligned = _jit_twins(na2d_fwd_kernel)
na2d_bwd_dq_kernel, na2d_bwd_dq_kernel_unaligned = _jit_twins(na2d_bwd_dq_kernel, ["copies"])
na2d_bwd_dkdv_kernel, na2d_bwd_dkdv_kernel_unaligned = _jit_twins(na2d_bwd_dkdv_kernel)
