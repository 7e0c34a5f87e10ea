"""Wall-clock timing of repeated calls, the one helper behind the benchmark tools.

Every timed call is followed by :func:`synchronize`, so on a CUDA device a time covers
the kernels the call queued, not only their launch. Times are in milliseconds.

Example::

    from nattk.timing import median_ms

    ms = median_ms(lambda: model(images), repeats=10, warmup=2, device=images.device)
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Union

import torch

Device = Union[torch.device, str, None]


def synchronize(device: Device = None) -> None:
    """Waits for the work queued on ``device`` when it is a CUDA device; else returns."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def turn_times_ms(
    fns: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 0, device: Device = None
) -> dict[str, list[float]]:
    """Per-call times (ms) of several calls that take turns within each repeat.

    Taking turns makes slow drifts of the machine (clock, other load) hit every call
    alike, which timing one call after the other would not.

    Args:
        fns: The calls, by name (no arguments; their results are discarded).
        repeats: Timed calls of each.
        warmup: Untimed calls of each, first (index tables, allocator, autotuning).
        device: Where the calls queue work; a CUDA device is synchronised around each.

    Returns:
        ``{name: [ms of call 1, ..., ms of call repeats]}``.

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def call_times_ms(
    fn: Callable[[], object], repeats: int, warmup: int = 0, device: Device = None
) -> list[float]:
    """Per-call times (ms) of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones.

    See :func:`turn_times_ms` for the arguments.
    """
    return turn_times_ms({"fn": fn}, repeats, warmup, device)["fn"]


def median_ms(
    fn: Callable[[], object],
    repeats: int,
    warmup: int = 0,
    device: Device = None,
    min_time: float = 0.0,
) -> float:
    """Median time (ms) of a call of ``fn``.

    Args:
        fn: The call (no arguments; its result is discarded).
        repeats: Timed calls, at least.
        warmup: Untimed calls, first.
        device: Where ``fn`` queues work; a CUDA device is synchronised around each call.
        min_time: Seconds the timed calls should cover together: one more untimed
            call measures ``fn``, and short calls are repeated more (up to 1000 times).

    Raises:
        ValueError: ``repeats < 1`` or ``warmup < 0``.
    """
    if min_time > 0:
        (single,) = call_times_ms(fn, 1, warmup, device)
        repeats, warmup = max(repeats, min(1000, int(min_time * 1e3 / max(single, 1e-3)))), 0
    return statistics.median(call_times_ms(fn, repeats, warmup, device))
