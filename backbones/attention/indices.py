"""Index tables that define (dilated) neighborhood attention along one axis.

Every backend of the toolkit derives its neighborhoods from these tables, so the
semantics live in exactly one place. They follow NATTEN (<= 0.17) exactly:

* a query at position ``i`` belongs to the dilation group ``r = i % d`` and sits at
  position ``g = i // d`` inside it; the group has ``L_r = ceil((L - r) / d)`` members;
* its window starts at group position ``s = min(max(g - k // 2, 0), L_r - k)``, i.e. the
  window is shifted inwards at the borders, never padded or masked, so every query
  sees exactly ``k`` keys: ``j_t = (s + t) * d + r`` for ``t = 0 .. k - 1``;
* the relative-position-bias index of key ``t`` is ``(k - 1) + (j_t - i) / d``, which
  equals ``rpb_start + t`` with ``rpb_start = (k - 1) + s - g``.

A 2-D neighborhood is the Cartesian product of the row and column neighborhoods.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import torch


@dataclass(frozen=True)
class AxisTables:
    """Neighborhood tables of one spatial axis (all ``int64`` CPU tensors).

    Attributes:
        length: Axis length ``L``.
        kernel: Window size ``k`` along the axis.
        dilation: Dilation ``d`` along the axis.
        start: ``[L]`` first key position of each query's window.
        rpb_start: ``[L]`` bias index of each query's first key.
        inv_query: ``[L, M]`` for each key, the queries that attend to it (padded with 0).
        inv_slot: ``[L, M]`` the window slot ``t`` that key occupies for that query.
        inv_count: ``[L]`` number of valid entries in ``inv_query``/``inv_slot``.
    """

    length: int
    kernel: int
    dilation: int
    start: torch.Tensor
    rpb_start: torch.Tensor
    inv_query: torch.Tensor
    inv_slot: torch.Tensor
    inv_count: torch.Tensor

    def key_positions(self) -> torch.Tensor:
        """``[L, k]`` key position of every (query, slot) pair."""
        return self.start[:, None] + torch.arange(self.kernel) * self.dilation

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """The five tables in the order the C++ extension expects."""
        return (self.start, self.rpb_start, self.inv_query, self.inv_slot, self.inv_count)


def window_starts(
    length: int, kernel: int, dilation: int, device=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(start, rpb_start)`` ``[L]`` of every query of one axis: the closed form above.

    Plain tensor arithmetic on ``arange(length)``, so it also traces with a symbolic
    ``length`` (the export decompositions use it).
    """
    pos = torch.arange(length, device=device)
    group = pos % dilation
    in_group = torch.div(pos, dilation, rounding_mode="floor")
    group_len = torch.div(length - group + dilation - 1, dilation, rounding_mode="floor")
    win = torch.minimum((in_group - kernel // 2).clamp(min=0), group_len - kernel)
    return win * dilation + group, (kernel - 1) + win - in_group


@lru_cache(maxsize=256)
def axis_tables(length: int, kernel: int, dilation: int) -> AxisTables:
    """Builds (and caches) the neighborhood tables of one axis.

    Args:
        length: Axis length; must be at least ``kernel * dilation``.
        kernel: Window size along the axis (>= 1).
        dilation: Dilation along the axis (>= 1).

    Returns:
        The axis' :class:`AxisTables`.
    """
    if kernel < 1 or dilation < 1:
        raise ValueError(f"kernel ({kernel}) and dilation ({dilation}) must be positive")
    if length < kernel * dilation:
        raise ValueError(
            f"axis length {length} is smaller than kernel_size * dilation = {kernel * dilation}"
        )
    pos = torch.arange(length)
    start, rpb_start = window_starts(length, kernel, dilation)
    keys = (start[:, None] + torch.arange(kernel) * dilation).reshape(-1)
    queries = pos.repeat_interleave(kernel)
    slots = torch.arange(kernel).repeat(length)
    order = torch.argsort(keys, stable=True)
    keys, queries, slots = keys[order], queries[order], slots[order]
    count = torch.bincount(keys, minlength=length)
    offsets = torch.cumsum(count, 0) - count
    rank = torch.arange(keys.numel()) - offsets[keys]
    width = int(count.max())
    inv_query = torch.zeros(length, width, dtype=torch.long)
    inv_slot = torch.zeros(length, width, dtype=torch.long)
    inv_query[keys, rank] = queries
    inv_slot[keys, rank] = slots
    return AxisTables(
        length=length,
        kernel=kernel,
        dilation=dilation,
        start=start.contiguous(),
        rpb_start=rpb_start.contiguous(),
        inv_query=inv_query,
        inv_slot=inv_slot,
        inv_count=count.contiguous(),
    )


class _BoundedCache:
    """A small LRU cache of device tensors bounded by entry count and total bytes.

    Multi-scale training produces a new feature-map size almost every iteration;
    an unbounded (or a long count-bounded) cache of index tables would pin memory
    on the accelerator for shapes that never come back.
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0

    @staticmethod
    def _size(value) -> int:
        return sum(t.numel() * t.element_size() for t in value)

    def get(self, key, build):
        """The cached value of ``key``, built with ``build()`` on a miss."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = build()
        self._items[key] = value
        self._bytes += self._size(value)
        while len(self._items) > self.max_entries or (
            self._bytes > self.max_bytes and len(self._items) > 1
        ):
            _, evicted = self._items.popitem(last=False)
            self._bytes -= self._size(evicted)
        return value

    def nbytes(self) -> int:
        """Bytes held by the cached tensors."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Drops every entry."""
        self._items.clear()
        self._bytes = 0


# Per-axis tables are O(L * k) integers: thousands of shapes fit in a few MiB.
AXIS_CACHE = _BoundedCache(max_entries=1024, max_bytes=16 * 2**20)


def axis_windows(
    length: int, kernel: int, dilation: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Key positions ``[L, k]`` and bias indices ``[L, k]`` of one axis, on ``device``.

    Served from a small bounded cache (:data:`AXIS_CACHE`); the 2-D tables are never
    cached, they are formed per chunk of query rows from these two.
    """
    device = torch.device(device)

    def build():
        tables = axis_tables(length, kernel, dilation)
        bias = tables.rpb_start[:, None] + torch.arange(kernel)
        return tables.key_positions().to(device), bias.to(device)

    return AXIS_CACHE.get((length, kernel, dilation, device), build)


def grid_indices(
    height: int,
    width: int,
    kernel: tuple[int, int],
    dilation: tuple[int, int],
    device: torch.device | None = None,
    rows: slice | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat key and bias indices of the queries of an ``height x width`` map.

    Args:
        height: Map height.
        width: Map width.
        kernel: ``(k_rows, k_cols)``.
        dilation: ``(d_rows, d_cols)``.
        device: Where to put the tensors.
        rows: Only these query rows (default: all).

    Returns:
        ``(keys, bias)``, both ``[rows, width, k_rows * k_cols]`` int64, slots in
        row-major window order (``t = t_row * k_cols + t_col``). ``keys`` indexes the
        flattened map (``row * width + col``); ``bias`` indexes the flattened
        ``[2 * k_rows - 1, 2 * k_cols - 1]`` bias table.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    key_rows, bias_rows = axis_windows(height, kernel[0], dilation[0], device)
    key_cols, bias_cols = axis_windows(width, kernel[1], dilation[1], device)
    if rows is not None:
        key_rows, bias_rows = key_rows[rows], bias_rows[rows]
    n_rows, n_keys = key_rows.shape[0], kernel[0] * kernel[1]
    keys = key_rows[:, None, :, None] * width + key_cols[None, :, None, :]
    bias = bias_rows[:, None, :, None] * (2 * kernel[1] - 1) + bias_cols[None, :, None, :]
    return keys.reshape(n_rows, width, n_keys), bias.reshape(n_rows, width, n_keys)
