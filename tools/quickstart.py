"""The toolkit's main job on its embedded default.

Today it exercises the part of the toolkit that exists end to end: the
neighborhood-attention layer the NAT/DiNAT checkpoints need. It

1. checks every CPU backend against the pure-PyTorch reference (outputs and
   gradients of q, k, v and the relative position bias) on a DiNAT-style layer;
2. benchmarks the layer against Swin window attention on the NAT-Tiny
   stage-1 shape (2×56×56 tokens, 2 heads × 32, kernel 7, dilation 1 and 8);
3. writes ``work_dirs/quickstart/{check.json,results.md,results.json}``.

The training/evaluation quickstart on a generated toy dataset replaces this once
the detection and segmentation plugins land (see README, "Status").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from nattk.backbones.attention import backend_report, neighborhood_attention_2d

sys.path.insert(0, str(Path(__file__).parent))
import benchmark_attention  # noqa: E402


def check_backends(seed: int = 0) -> dict:
    """Max |difference| of each CPU backend vs the reference, fp32, with gradients."""
    gen = torch.Generator().manual_seed(seed)
    shape = (2, 37, 41, 4, 32)
    tensors = [torch.randn(shape, generator=gen) for _ in range(3)] + [
        torch.randn(4, 13, 13, generator=gen) * 0.1
    ]
    weight = torch.randn(shape, generator=gen)

    def run(backend):
        leaves = [t.clone().requires_grad_(True) for t in tensors]
        out = neighborhood_attention_2d(*leaves[:3], 7, (3, 2), leaves[3], backend=backend)
        (out * weight).sum().backward()
        return [out.detach()] + [t.grad for t in leaves]

    reference = run("torch")
    usable = [
        name for name, reason in backend_report("cpu").items() if reason is None and name != "torch"
    ]
    report = {}
    for backend in usable:
        diffs = [(a - b).abs().max().item() for a, b in zip(run(backend), reference)]
        report[backend] = dict(zip(["out", "dq", "dk", "dv", "drpb"], diffs))
        status = "OK" if max(diffs) < 1e-4 else "MISMATCH"
        print(f"[check] backend {backend!r} vs reference: max|diff| = {max(diffs):.2e}  {status}")
        if status != "OK":
            raise SystemExit(f"backend {backend} disagrees with the reference")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="work_dirs/quickstart")
    args = parser.parse_args()
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    report = check_backends()
    (work_dir / "check.json").write_text(json.dumps(report, indent=1))
    benchmark_attention.main(
        ["--shapes", "cls224 stage1", "--repeats", "3", "--out", str(work_dir)]
    )


if __name__ == "__main__":
    main()
