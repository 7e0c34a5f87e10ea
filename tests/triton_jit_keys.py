"""Prints, as JSON, how many variants of each Triton kernel the JIT compiles for many calls.

Run by ``tests/test_triton_backend.py`` in a process without ``TRITON_INTERPRET`` (the
kernels must be real ``JITFunction``s). For every map size, dilation and batch, for
contiguous q/k/v and for views of one qkv tensor, the real launcher makes its launches
through Triton's JIT (``JITFunction.run``, warmup) under a stand-in sm_90 driver
(:func:`nattk.dev.triton_aot.compile_through_the_jit`): each distinct specialisation
compiles once.

Usage: python tests/triton_jit_keys.py HEADS HEAD_DIM DTYPE
"""

from __future__ import annotations

import json
import sys

import torch

from nattk.dev import triton_aot

SIZES = [(14, 14), (20, 24), (33, 47), (56, 56), (100, 168), (25, 42), (61, 77)]
DILATIONS = [(1, 1), (2, 2), (3, 5), (8, 8)]
BATCHES = [1, 2, 5]


def _inputs(layout, batch, height, width, heads, dim, dtype):
    if layout == "qkv":
        qkv = torch.zeros(batch, height, width, 3, heads, dim, dtype=dtype)
        return qkv.unbind(3)
    return tuple(torch.zeros(batch, height, width, heads, dim, dtype=dtype) for _ in range(3))


def main() -> None:
    heads, dim, dtype = int(sys.argv[1]), int(sys.argv[2]), getattr(torch, sys.argv[3])
    counts: dict[str, dict[str, int]] = {}
    for layout in ("contiguous", "qkv"):

        def work(layout=layout):
            for (height, width), dilation, batch in (
                (s, d, b)
                for s in SIZES
                for d in DILATIONS
                for b in BATCHES
                if s[0] >= 7 * d[0] and s[1] >= 7 * d[1]  # as the module pads them
            ):
                q, k, v = _inputs(layout, batch, height, width, heads, dim, dtype)
                rpb = torch.zeros(heads, 13, 13)
                triton_aot.run_launcher(q, k, v, rpb, (7, 7), dilation)

        compiled = triton_aot.compile_through_the_jit(work)
        counts[layout] = {name: len(variants) for name, variants in compiled.items()}
    json.dump(counts, sys.stdout)


if __name__ == "__main__":
    main()
