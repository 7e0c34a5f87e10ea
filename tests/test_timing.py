"""``nattk.timing``: the benchmark tools' one timing helper, on a fake clock."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch

from nattk import timing


@pytest.fixture
def clock(monkeypatch):
    """nattk.timing's clock, read in (start, end) pairs: the n-th timed call lasts n ms."""
    pairs = ((10.0 * n, 10.0 * n + n * 1e-3) for n in itertools.count(1))
    readings = itertools.chain.from_iterable(pairs)
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: next(readings)))


def test_call_times_run_warmup_untimed_then_time_each_call(clock):
    calls = []
    times = timing.call_times_ms(lambda: calls.append(1), repeats=3, warmup=2)
    assert len(calls) == 5
    assert times == pytest.approx([1.0, 2.0, 3.0])


def test_median_ms_is_the_median_of_the_timed_calls(clock):
    assert timing.median_ms(lambda: None, repeats=5, warmup=1) == pytest.approx(3.0)


def test_turn_times_interleave_the_calls():
    order = []
    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = timing.turn_times_ms(fns, repeats=2, warmup=1)
    assert order == ["a", "b"] * 3
    assert set(times) == {"a", "b"} and all(len(t) == 2 for t in times.values())
    assert all(t >= 0 for values in times.values() for t in values)


def test_min_time_repeats_short_calls_more():
    calls = []
    timing.median_ms(lambda: calls.append(1), repeats=2, min_time=0.01)
    # one sizing call, then far more than 2 timed ones (a list append takes microseconds)
    assert 1 + 2 < len(calls) <= 1 + 1000


def test_cuda_devices_are_synchronised_around_each_call(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    timing.call_times_ms(lambda: None, repeats=2, device="cuda:0")
    assert len(synced) == 4 and all(torch.device(d).type == "cuda" for d in synced)
    synced.clear()
    timing.call_times_ms(lambda: None, repeats=2, device=torch.device("cpu"))
    timing.call_times_ms(lambda: None, repeats=2)
    assert synced == []


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="repeats >= 1"):
        timing.median_ms(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="warmup >= 0"):
        timing.call_times_ms(lambda: None, repeats=1, warmup=-1)
