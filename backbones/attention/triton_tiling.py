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
  groups). The halo is walked in raster order in blocks of ``keys`` keys; every
  block is one ``tl.dot``; pairs outside a query's window are masked.
* The key/value-gradient kernel does the converse: a *key tile*, and the rectangle
  of queries whose windows contain one of its keys.

Map sizes and dilations never appear in a tile shape: only the kernel size picks
one, so a new image size never compiles a new kernel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class TileShape:
    """Query (or key) tile ``rows x cols`` and the key (or query) block walked per step."""

    rows: int
    cols: int
    block: int

    @property
    def size(self) -> int:
        """Queries per tile (the ``M`` of every ``tl.dot``)."""
        return self.rows * self.cols


def tile_shape(kernel_size: Sequence[int]) -> TileShape:
    """The tile of a kernel size (chosen so the published shapes do >= 25% useful work).

    Kernel 7 takes 4 x 8 queries (a 10 x 14 halo); kernel 9 and larger take 8 x 8
    (an 18 x 18 halo for kernel 11). Blocks of 32 keys keep the padding of a halo
    to whole blocks small.
    """
    if max(kernel_size) <= 7:
        return TileShape(rows=4, cols=8, block=32)
    return TileShape(rows=8, cols=8, block=32)


def cdiv(a: int, b: int) -> int:
    """Ceiling division of non-negative ints."""
    return -(-a // b)


def window_start(pos: int, length: int, kernel: int) -> int:
    """Window start of group position ``pos`` in a group of ``length`` (shifted inwards)."""
    return min(max(pos - kernel // 2, 0), length - kernel)


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


def _axis_tiles(length: int, dilation: int, kernel: int, tile: int) -> list[tuple[int, int]]:
    """``(valid queries, halo length)`` of every tile along one axis, over all groups."""
    out = []
    for group in range(dilation):
        group_len = cdiv(length - group, dilation)
        for first in range(0, tiles_per_axis(length, dilation, tile) * tile, tile):
            last = min(first + tile, group_len) - 1
            if last < first:
                out.append((0, 0))
                continue
            halo = window_start(last, group_len, kernel) - window_start(first, group_len, kernel)
            out.append((last - first + 1, halo + kernel))
    return out


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
    for n_rows, halo_rows in rows:
        for n_cols, halo_cols in cols:
            if n_rows and n_cols:
                useful += n_rows * n_cols * kernel[0] * kernel[1]
                blocks = cdiv(halo_rows * halo_cols, tile.block)
                evaluated += tile.size * blocks * tile.block
    return useful, evaluated


def published_layer_shapes() -> list[tuple[str, int, int, int, int, int]]:
    """``(setup, level, H, W, kernel, dilation)`` of every distinct published DiNAT layer.

    Inputs padded to a multiple of 32 as the frameworks do; maps smaller than
    ``kernel x dilation`` at the size the module pads them to.
    """
    from ..nat import DiNAT
    from ..variants import DILATION_PRESETS

    setups = [
        ("COCO 800x1333", (800, 1344), 7, "coco"),
        ("ADE20K 512", (512, 512), 7, "ade20k512"),
        ("ADE20K 640", (640, 640), 7, "ade20k640"),
        ("Mask2Former ADE20K 640", (640, 640), 11, "m2f"),
        ("Mask2Former COCO 1024", (1024, 1024), 11, "m2f"),
        ("Mask2Former Cityscapes 512x1024", (512, 1024), 11, "m2f"),
    ]
    rows = []
    for name, (height, width), kernel, preset in setups:
        for level, dilations in enumerate(DILATION_PRESETS[DiNAT.family][preset]):
            h, w = cdiv(height, 4 * 2**level), cdiv(width, 4 * 2**level)
            for d in sorted(set(dilations)):
                rows.append((name, level, max(h, kernel * d), max(w, kernel * d), kernel, d))
    return rows


def useful_work_markdown() -> str:
    """The docs table of :func:`useful_work` over :func:`published_layer_shapes`."""
    lines = [
        "| setup | level | map (padded) | kernel | dilation | tile | useful / evaluated pairs |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, level, h, w, kernel, d in published_layer_shapes():
        useful, evaluated = useful_work(h, w, (kernel, kernel), (d, d))
        tile = tile_shape((kernel, kernel))
        lines.append(
            f"| {name} | {level} | {h}x{w} | {kernel} | {d} | "
            f"{tile.rows}x{tile.cols} q, {tile.block} k | {100 * useful / evaluated:.1f}% |"
        )
    return "\n".join(lines)
