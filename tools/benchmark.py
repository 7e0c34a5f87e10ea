"""Backbone-level training throughput: NAT/DiNAT (this toolkit) vs Swin (timm).

Times forward + backward of the dense backbones alone (features of all four levels,
loss = sum of the feature means), under bf16 autocast by default, at detection and
segmentation input sizes, and records images/s and peak memory. Swin comes from
timm (``features_only=True``, same input size); where timm is missing or refuses
the size, its rows say so.

Usage (GPU)::

    python tools/benchmark.py --device cuda --backend triton --out bench_out
    python tools/benchmark.py --device cuda --backend torch --out bench_out_torch

Dry run on CPU (small input, one iteration)::

    python tools/benchmark.py --device cpu --size 64 96 --batch 1 --iters 1 --warmup 0
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

from nattk.backbones.attention import NeighborhoodAttention2D
from nattk.backbones.variants import create_model
from nattk.dev.provenance import git_commit
from nattk.timing import call_times_ms, synchronize

# (model, input size, dilation preset); the L models also at 640x640 (ADE20K).
DEFAULT_RUNS = [
    ("nat_tiny", (800, 1344), None),
    ("dinat_tiny", (800, 1344), "coco"),
    ("swin_tiny", (800, 1344), None),
    ("dinat_large", (800, 1344), "coco"),
    ("swin_large", (800, 1344), None),
    ("dinat_large", (640, 640), "ade20k640"),
    ("swin_large", (640, 640), None),
    # mmdet's Swin-T (the backbone of mmdet's Swin configs), where mmdet is installed:
    # the CPU comparison (`--device cpu --dtype fp32 --size 512 768`).
    ("mmdet_swin_tiny", (800, 1344), None),
]
TIMM_NAMES = {
    "swin_tiny": "swin_tiny_patch4_window7_224",
    "swin_large": "swin_large_patch4_window7_224",
}


@dataclass
class Row:
    model: str
    size: str
    batch: int
    backend: str
    images_per_s: Optional[float] = None
    ms_per_iter: Optional[float] = None
    peak_mb: Optional[float] = None
    note: str = ""


def build(name: str, size, preset: Optional[str]):
    """The dense backbone (NAT/DiNAT from this toolkit, Swin from timm or mmdet)."""
    if name == "mmdet_swin_tiny":
        from mmdet.models.backbones import SwinTransformer

        return SwinTransformer(
            embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7,
            out_indices=(0, 1, 2, 3),
        )  # fmt: skip
    if name in TIMM_NAMES:
        import timm

        try:
            return timm.create_model(
                TIMM_NAMES[name], features_only=True, img_size=size, strict_img_size=False
            )
        except TypeError:  # older timm without strict_img_size
            return timm.create_model(TIMM_NAMES[name], features_only=True, img_size=size)
    kwargs = {} if preset is None else {"dilations": preset}
    return create_model(name, num_classes=0, **kwargs)


def set_backend(model: torch.nn.Module, backend: str) -> None:
    for module in model.modules():
        if isinstance(module, NeighborhoodAttention2D):
            module.backend = backend


def measure(model, size, batch, device, dtype, iters: int, warmup: int) -> tuple[float, float]:
    """``(ms per forward+backward, peak MB)`` of one training step on random images."""
    model.to(device).train()
    images = torch.randn(batch, 3, *size, device=device)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)

    def step():
        model.zero_grad(set_to_none=True)
        with autocast:
            feats = model(images)
        loss = sum(f.float().mean() for f in feats)
        loss.backward()

    for _ in range(warmup):
        step()
    synchronize(device)
    if device.type == "cuda":  # the peak of the timed steps, not of the warm-up's autotuning
        torch.cuda.reset_peak_memory_stats(device)
    ms = statistics.fmean(call_times_ms(step, iters, device=device))
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return ms, peak


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--backend", default="auto", help="NA backend of the NAT/DiNAT models")
    parser.add_argument(
        "--models", nargs="+", default=None, help="model names to run (glob patterns, e.g. '*tiny')"
    )
    parser.add_argument("--size", type=int, nargs=2, default=None, help="override H W")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default="bench_out")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    header = (
        f"Backbone fwd+bwd, {name}, torch {torch.__version__}, {args.dtype} autocast, "
        f"batch {args.batch}, NA backend {args.backend}, commit {git_commit()}"
    )
    print(header, flush=True)
    rows = []
    for model_name, size, preset in DEFAULT_RUNS:
        if args.models and not any(fnmatch.fnmatchcase(model_name, m) for m in args.models):
            continue
        size = tuple(args.size) if args.size else size
        is_swin = "swin" in model_name
        source = "mmdet" if model_name.startswith("mmdet") else "timm"
        row = Row(
            model_name, f"{size[0]}x{size[1]}", args.batch, source if is_swin else args.backend
        )
        try:
            model = build(model_name, size, preset)
            if not is_swin:
                set_backend(model, args.backend)
            ms, peak = measure(model, size, args.batch, device, dtype, args.iters, args.warmup)
            row.ms_per_iter, row.peak_mb = ms, peak
            row.images_per_s = args.batch * 1e3 / ms
        except Exception as error:  # timm missing / refusing a size: say so in the table
            row.note = f"{type(error).__name__}: {str(error).splitlines()[0][:100]}"
        finally:
            model = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(asdict(row)), flush=True)

    lines = [header, "", "| model | input | backend | img/s | ms/iter | peak MB | note |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        fmt = lambda x, s=".1f": "" if x is None else format(x, s)  # noqa: E731
        lines.append(
            f"| {r.model} | {r.size} | {r.backend} | {fmt(r.images_per_s, '.2f')} | "
            f"{fmt(r.ms_per_iter)} | {fmt(r.peak_mb, '.0f')} | {r.note} |"
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"backbones_{args.backend}.md").write_text("\n".join(lines) + "\n")
    (out / f"backbones_{args.backend}.json").write_text(
        json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=1)
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
