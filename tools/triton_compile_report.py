"""Compile the Triton attention kernels ahead of time and read their SASS; print a table.

No GPU needed: the kernels the JIT builds for real tensors (the launcher's launches
go through Triton's JIT, ``warmup``, under a stand-in driver naming the target) are
compiled for sm_90, sm_80 and sm_86, and Triton's bundled ``cuobjdump`` reads from each cubin its
registers, local memory (spills) and SASS: global load/store widths, MMA instructions,
non-MMA instructions per key block of the inner loop, and atomics.

Exits non-zero when a specialisation needs more shared memory than its target has,
or more than the bound ``unsupported_reason`` uses to refuse calls.

Usage:
    python tools/triton_compile_report.py [--arch 90 80 86] [--dtype fp16 bf16]
        [--kernel-size 7 11] [--head-dim 32] [--jobs 2] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80, 86], choices=[80, 86, 90])
    parser.add_argument("--dtype", nargs="+", help="only these dtypes (fp16, bf16, fp32)")
    parser.add_argument("--kernel-size", type=int, nargs="+", help="only these kernel sizes")
    parser.add_argument("--head-dim", type=int, nargs="+", help="only these head dims")
    parser.add_argument("--rpb-only", action="store_true", help="only calls with a bias")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    parser.add_argument("--markdown", help="also write the table to this file")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)

    from nattk.backbones.attention.triton_backend import _block_dim
    from nattk.backbones.attention.triton_tiling import shared_memory_bound
    from nattk.dev import triton_aot

    specs = [
        s
        for s in triton_aot.published_specialisations()
        if (not args.dtype or s.dtype in args.dtype)
        and (not args.kernel_size or s.kernel_size in args.kernel_size)
        and (not args.head_dim or s.head_dim in args.head_dim)
        and (s.rpb or not args.rpb_only)
    ]
    results = triton_aot.compile_report(specs, archs=tuple(args.arch), processes=args.jobs)
    table = triton_aot.markdown_table(results)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(table + "\n")
    if args.json:
        with open(args.json, "w") as handle:
            rows = [
                dict(
                    r.as_dict(), non_mma_per_window_pair=triton_aot.instructions_per_window_pair(r)
                )
                for r in results
            ]
            json.dump(rows, handle, indent=1)
    failed = False
    for r in results:
        bits = int(r.spec.dtype[-2:])
        bound = shared_memory_bound(bits, _block_dim(r.spec.head_dim))
        if r.shared_bytes > r.shared_limit:
            print(f"ERROR: {r.spec} needs {r.shared_bytes} B of shared memory on sm_{r.arch}")
            failed = True
        if r.shared_bytes > bound:
            print(f"ERROR: {r.spec} uses {r.shared_bytes} B of shared memory, above the bound "
                  f"{bound} B that unsupported_reason assumes")  # fmt: skip
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
