"""How the Triton kernels tile a (dilated) neighborhood-attention call.

Plain integer arithmetic, importable without Triton: the launcher uses it to size
the grid, and :func:`useful_work` uses the very same loop bounds to count how many
of the query-key pairs the kernels evaluate lie in a window.

The tiling (NATTEN <= 0.17 semantics, see :mod:`.indices`):

* Dilated NA is plain NA on each dilation group's sub-grid (positions ``r, r + d,
  r + 2d, ...``), which has its own length ``L_r = ceil((L - r) / d)``. Every
  program owns one *query tile* of ``rows x cols`` queries of one group.
* The windows of a tile's queries cover a rectangle of keys of the same group, its
  *halo*: from the first query's window start to the last query's window end, per
  axis (at most ``rows + k - 1`` by ``cols + k - 1``, less at borders and in short
  groups). The halo is walked in blocks of whole halo rows (as many as fit in
  ``block`` keys); every block is one ``tl.dot``; pairs outside a query's window are
  masked.
* The key/value-gradient kernel does the converse: a *key tile*, and the rectangle
  of queries whose windows contain one of its keys (wider than the forward halo
  near borders, where shifted windows pile up: walked in pitch-wide column chunks).

Map sizes and dilations never appear in a tile shape: only the kernel size picks
one, so a new image size never compiles a new kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class TileShape:
    """Query (or key) tile ``rows x cols`` and the key (or query) blocks walked per step.

    A halo is walked in blocks of as many whole halo rows as fit in ``block`` slots
    (``block // halo width``; ``pitch``, a power of two at least ``cols + k_w - 1``,
    the widest forward halo, bounds that width). A slot's halo row and column within
    its block are then the same in every block: computed once per program, no
    division inside the loop.
    """

    rows: int
    cols: int
    block: int
    pitch: int

    @property
    def size(self) -> int:
        """Queries per tile (the ``M`` of every ``tl.dot``)."""
        return self.rows * self.cols

    @property
    def block_rows(self) -> int:
        """Halo rows per key block."""
        return self.block // self.pitch

    def interior_pitch(self, kernel_size: Sequence[int]) -> int:
        """Width of an interior tile's halo (``cols + k_w - 1``): its slots per halo row."""
        return self.cols + kernel_size[1] - 1

    def interior_block_rows(self, kernel_size: Sequence[int]) -> int:
        """Halo rows per key block of an interior tile."""
        return self.block // self.interior_pitch(kernel_size)

    def interior_blocks(self, kernel_size: Sequence[int]) -> int:
        """Key blocks an interior tile walks (its halo is ``rows + k_h - 1`` rows)."""
        return cdiv(self.rows + kernel_size[0] - 1, self.interior_block_rows(kernel_size))


#: Queries per tile: 32 rows of every ``tl.dot`` (two m16 MMA tiles).
TILE_QUERIES = 32


def tile_shape(kernel_size: Sequence[int]) -> TileShape:
    """The tile of a kernel size: 32 queries, as wide as the 16-slot pitch allows.

    Kernel 7 takes 4 x 8 queries (a 10 x 14 halo, walked as 5 blocks of 2 rows x 16
    slots); kernel 11 takes 8 x 4 (an 18 x 14 halo, 9 blocks). Kernels wider than 15
    take a 32-slot pitch (one row per block).
    """
    width = kernel_size[1]
    for pitch in (16, 32, 64, 128):
        for cols in (8, 4, 2, 1):
            if cols + width - 1 <= pitch:
                block = max(32, pitch)
                return TileShape(TILE_QUERIES // cols, cols, block, pitch)
    raise ValueError(f"kernel size {tuple(kernel_size)} is wider than 128")


#: The Triton kernels of :mod:`.triton_kernels` (each also has an ``*_unaligned`` twin).
FORWARD_KERNEL = "na2d_fwd_kernel"
BACKWARD_DQ_KERNEL = "na2d_bwd_dq_kernel"
BACKWARD_DKDV_KERNEL = "na2d_bwd_dkdv_kernel"
KERNEL_NAMES = (FORWARD_KERNEL, BACKWARD_DQ_KERNEL, BACKWARD_DKDV_KERNEL)

#: ``(num_warps, num_stages)`` per kernel, input width in bits and head-dim block: the
#: first entry whose block bound is at least the call's. Chosen from the SASS counters of
#: ``tools/triton_compile_report.py`` (docs/benchmarks.md): the fewest non-MMA
#: instructions per window pair without spilling on sm_90/sm_80. With 32-query tiles,
#: two warps each own 16 whole rows, so the forward's softmax row reductions stay inside
#: a warp; the backward kernels hold more tiles at once and need 4 warps (dq), or one
#: stage (dk/dv at head dim 32), to stay in registers; fp32 tiles take more warps.
LAUNCH_CONFIG = {
    FORWARD_KERNEL: {16: ((64, (2, 2)), (128, (4, 2))), 32: ((64, (4, 2)), (128, (8, 2)))},
    BACKWARD_DQ_KERNEL: {16: ((128, (4, 2)),), 32: ((128, (8, 2)),)},
    BACKWARD_DKDV_KERNEL: {16: ((32, (2, 1)), (128, (4, 2))), 32: ((128, (8, 2)),)},
}


def launch_config(kernel: str, element_bits: int, block_dim: int) -> tuple[int, int]:
    """``(num_warps, num_stages)`` of one kernel (see :data:`LAUNCH_CONFIG`)."""
    table = LAUNCH_CONFIG[kernel.removesuffix("_unaligned")][16 if element_bits <= 16 else 32]
    for bound, config in table:
        if block_dim <= bound:
            return config
    raise ValueError(f"no launch configuration for head-dim block {block_dim}")


def interior_path(element_bits: int, block_dim: int) -> bool:
    """Whether the kernels get the interior fast path (a second key-block loop).

    Not for fp32 at head-dim blocks of 64 or more: there its second loop pushes the
    forward past 255 registers (it spills, ``tools/triton_compile_report.py``), and fp32
    is the exact path, not the fast one. Every tile then takes the general loop.
    """
    return element_bits <= 16 or block_dim <= 32


#: Shared memory of any of the three kernels, bytes, at most ``element bytes x
#: head-dim block x rows + SHARED_SCRATCH``: a 32-row q tile and two stages of 32-key k
#: and v blocks (160 rows), 32 more rows in the dq kernel with the interior path, plus
#: layout-conversion scratch. An upper bound fitted to the compiled kernels;
#: ``tests/test_triton_backend.py`` checks it against every specialisation
#: ``tools/triton_compile_report.py`` compiles.
SHARED_ROWS = 160
INTERIOR_SHARED_ROWS = 192
SHARED_SCRATCH = 8192


def shared_memory_bound(element_bits: int, block_dim: int) -> int:
    """Upper bound of the shared memory (bytes) one block of any kernel uses."""
    rows = INTERIOR_SHARED_ROWS if interior_path(element_bits, block_dim) else SHARED_ROWS
    return element_bits // 8 * block_dim * rows + SHARED_SCRATCH


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


def window_start(pos: int, length: int, kernel: int) -> int:
    """Window start of group position ``pos`` in a group of ``length`` (shifted inwards)."""
    return min(max(pos - kernel // 2, 0), length - kernel)


def _first_query(key: int, kernel: int) -> int:
    """First group position whose window holds ``key`` (the kernels' ``_first_query``)."""
    return 0 if key < kernel else key - kernel + 1 + kernel // 2


def _last_query(key: int, length: int, kernel: int) -> int:
    """Last group position whose window holds ``key`` (the kernels' ``_last_query``)."""
    return length - 1 if key >= length - kernel else min(key + kernel // 2, length - 1)


def tiles_per_axis(length: int, dilation: int, tile: int) -> int:
    """Tiles along one axis of the longest dilation group (the grid's extent per group)."""
    return cdiv(cdiv(length, dilation), tile)


def grid_size(height: int, width: int, dilation: Sequence[int], tile: TileShape) -> int:
    """Programs per (batch, head): every tile of every dilation group."""
    return (
        dilation[0]
        * tiles_per_axis(height, dilation[0], tile.rows)
        * dilation[1]
        * tiles_per_axis(width, dilation[1], tile.cols)
    )


def _axis_tiles(
    length: int, dilation: int, kernel: int, tile: int, keys: bool = False
) -> list[tuple[int, int, bool]]:
    """``(points, span, interior)`` of every non-empty tile along one axis, over all groups.

    ``points`` are the tile's valid queries (keys); ``span`` the keys its queries'
    windows cover, its halo (or, for ``keys``, the queries whose windows hold its keys);
    ``interior`` whether the kernels take the interior path for it on this axis.
    """
    out = []
    for group in range(dilation):
        n = cdiv(length - group, dilation)
        for first in range(0, n, tile):
            last = min(first + tile, n) - 1
            if keys:
                inner = first >= kernel and first + tile + kernel <= n
                span = _last_query(last, n, kernel) + 1 - _first_query(first, kernel)
            else:
                inner = first >= kernel // 2 and last + (kernel - 1 - kernel // 2) < n
                span = window_start(last, n, kernel) + kernel - window_start(first, n, kernel)
            points = last - first + 1
            out.append((points, span, inner and points == tile))
    return out


def interior_pairs(kernel_size: Sequence[int], keys_first: bool = False) -> tuple[list, list]:
    """Bias index and window test of every (tile point, block slot) pair of an interior tile.

    Returns two nested lists ``[blocks][tile.size][tile.block]``: the flat index into a
    head's ``(2 k_h - 1) x (2 k_w - 1)`` bias table (0 where unused), and whether the
    pair is in a window. A query tile is interior when all its windows are unclamped:
    its halo starts ``k // 2`` before it, and key slot ``(r, c)`` is in the window of
    tile query ``(i, j)`` when ``0 <= r - i < k_h`` and ``0 <= c - j < k_w``. With
    ``keys_first`` the rows are a key tile's keys and the slots its queries, which start
    ``k - 1 - k // 2`` before the tile (the dk/dv kernel).
    """
    kh, kw = kernel_size
    tile = tile_shape(kernel_size)
    pitch, rows = tile.interior_pitch(kernel_size), tile.interior_block_rows(kernel_size)
    halo_rows = tile.rows + kh - 1
    index, inside = [], []
    for block in range(tile.interior_blocks(kernel_size)):
        index.append([])
        inside.append([])
        for point in range(tile.size):
            pr, pc = divmod(point, tile.cols)
            index[-1].append([])
            inside[-1].append([])
            for slot in range(tile.block):
                lr, lc = divmod(slot, pitch)
                hr = block * rows + lr
                if keys_first:  # point: key; slot: query. key - window start = p - h + k - 1
                    tr, tc = pr - hr + kh - 1, pc - lc + kw - 1
                    br, bc = tr + kh - 1 - kh // 2, tc + kw - 1 - kw // 2
                else:  # point: query; slot: key. key - window start = h - p
                    tr, tc = hr - pr, lc - pc
                    br, bc = kh - 1 - kh // 2 + tr, kw - 1 - kw // 2 + tc
                ok = lr < rows and hr < halo_rows and 0 <= tr < kh and 0 <= tc < kw
                inside[-1][-1].append(ok)
                index[-1][-1].append(br * (2 * kw - 1) + bc if ok else 0)
    return index, inside


def useful_work(
    height: int, width: int, kernel: Sequence[int], dilation: Sequence[int]
) -> tuple[int, int]:
    """``(pairs in a window, pairs evaluated)`` by the forward kernel on one (batch, head).

    Evaluated pairs are what the ``tl.dot`` calls compute: the full query tile
    times every key block walked, padding included.
    """
    tile = tile_shape(kernel)
    rows = _axis_tiles(height, dilation[0], kernel[0], tile.rows)
    cols = _axis_tiles(width, dilation[1], kernel[1], tile.cols)
    useful = evaluated = 0
    for n_rows, halo_rows, _ in rows:
        for n_cols, halo_cols, _ in cols:
            useful += n_rows * n_cols * kernel[0] * kernel[1]
            rows_per_block = tile.block // halo_cols
            evaluated += tile.size * cdiv(halo_rows, rows_per_block) * tile.block
    return useful, evaluated


def key_blocks(
    height: int, width: int, kernel: Sequence[int], dilation: Sequence[int], keys: bool = False
) -> tuple[int, int]:
    """``(interior, border)`` key blocks the forward/dq kernels walk on one (batch, head),
    or with ``keys`` the query blocks of the dk/dv kernel: what the SASS counts per
    block are multiplied by (:mod:`nattk.dev.triton_aot`)."""
    tile = tile_shape(kernel)
    rows = _axis_tiles(height, dilation[0], kernel[0], tile.rows, keys)
    cols = _axis_tiles(width, dilation[1], kernel[1], tile.cols, keys)
    inner_blocks = tile.interior_blocks(kernel)
    interior = border = 0
    for _, span_r, inner_r in rows:
        for _, span_c, inner_c in cols:
            if inner_r and inner_c:
                interior += inner_blocks
                continue
            for c0 in range(0, span_c, tile.pitch):
                border += cdiv(span_r, tile.block // min(span_c - c0, tile.pitch))
    return interior, border
