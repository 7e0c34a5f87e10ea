"""Compile the Triton attention kernels ahead of time for sm_90 and sm_80; print resources.

No GPU needed: Triton compiles for a named target and its bundled ``cuobjdump``
reads registers and local memory (spills) from the cubin. Every specialisation the
published models use is compiled (forward and both backward kernels; fp16/bf16/fp32;
kernel 7 and 11; head dim 32 and 48). Exits non-zero when one needs more shared
memory than its target has.

Usage:
    python tools/triton_compile_report.py [--arch 90 80] [--jobs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[90, 80], choices=[80, 90])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    os.environ.pop("TRITON_INTERPRET", None)

    from nattk.backbones.attention import triton_aot

    results = triton_aot.compile_report(archs=tuple(args.arch), processes=args.jobs)
    print(triton_aot.markdown_table(results))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([r.as_dict() for r in results], handle, indent=1)
    too_big = [r for r in results if r.shared_bytes > r.shared_limit]
    for r in too_big:
        print(f"ERROR: {r.spec} needs {r.shared_bytes} B of shared memory on sm_{r.arch}")
    return 1 if too_big else 0


if __name__ == "__main__":
    sys.exit(main())
