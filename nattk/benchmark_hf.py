"""Hugging Face DinatModel on this toolkit's attention vs core DiNAT-T vs HF SwinModel (CPU, fp32).

Times three Tiny models with random weights, at batch 2 and 224² / 512² inputs:

* ``HF DiNAT``: ``transformers.DinatModel`` (DiNAT-T: depths 3-4-18-5, the
  ``imagenet224`` dilations) after :func:`nattk.hf.use_toolkit_attention`;
* ``core DiNAT``: ``create_model("dinat_tiny", num_classes=0, out_indices=(3,))``. The
  dense backbone, not the classifier, because ``DinatModel`` has no classifier head:
  both run the stem, the four levels and a LayerNorm of the last level (HF also pools
  it: a mean over 49 or 256 tokens); the parameter counts printed must be equal;
* ``HF Swin``: ``transformers.SwinModel`` (Swin-T, window 7, transformers' default SDPA
  attention; it pads 128² maps to the window itself).

"fwd" runs in eval mode under ``torch.no_grad``; "fwdbwd" in train mode (dropout and
drop-path 0) runs ``main_output.sum().backward()`` with gradients reset to ``None``
before each step; the main output is ``last_hidden_state`` (HF) and the level-3
feature map (core). Times are medians of ``--repeats`` runs after ``--warmup``, the
three models taking turns within each repeat so that slow drifts hit them alike; run
it on an idle machine (another busy process on the cores of the torch threads spoils
every number). The goal "HF DinatModel/SwinModel within 10% of core DiNAT-T/Swin-T"
is ``HF/core - 1`` (both ratios share the Swin time), reported per row.

Usage::

    python tools/benchmark_hf.py --out bench_hf.md
    python tools/benchmark_hf.py --sizes 224 --modes fwd --repeats 3 --warmup 1
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from nattk.backbones import create_model
from nattk.backbones.attention import backend_report, resolve_backend
from nattk.backbones.variants import dilation_preset
from nattk.timing import turn_times_ms

DEPTHS = [3, 4, 18, 5]
GOAL = 0.10  # largest accepted HF/core - 1


def build_models() -> tuple[dict[str, torch.nn.Module], str]:
    """The three models (random weights, fp32, CPU) and the HF attention status line."""
    from nattk.hf import use_toolkit_attention

    status = use_toolkit_attention()  # before importing Dinat* (NATTEN >= 0.20 breaks that)
    from transformers import DinatConfig, DinatModel, SwinConfig, SwinModel

    torch.manual_seed(0)
    dinat = DinatConfig(
        embed_dim=64,
        depths=DEPTHS,
        num_heads=[2, 4, 8, 16],
        kernel_size=7,
        mlp_ratio=3.0,
        dilations=dilation_preset("dinat", "imagenet224", DEPTHS),
        drop_path_rate=0.0,
    )
    swin = SwinConfig(
        embed_dim=96,
        depths=[2, 2, 6, 2],
        num_heads=[3, 6, 12, 24],
        window_size=7,
        drop_path_rate=0.0,
    )
    core = create_model("dinat_tiny", 0, "imagenet224", drop_path_rate=0.0, out_indices=(3,))
    models = {"HF DiNAT": DinatModel(dinat), "core DiNAT": core, "HF Swin": SwinModel(swin)}
    return models, str(status)


def main_output(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``last_hidden_state`` of an HF model, the (only) feature map of the core backbone."""
    out = model(images)
    return out[0] if isinstance(out, (list, tuple)) else out.last_hidden_state


def step_fn(model: torch.nn.Module, images: torch.Tensor, mode: str) -> Callable[[], None]:
    """One forward (``"fwd"``) or forward+backward (``"fwdbwd"``) call on ``images``."""

    def fwd() -> None:
        with torch.no_grad():
            main_output(model, images)

    def fwdbwd() -> None:
        model.zero_grad(set_to_none=True)
        main_output(model, images).sum().backward()

    return fwd if mode == "fwd" else fwdbwd


def median_ms(fns: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median wall time (ms) of each call, the calls taking turns within each repeat."""
    times = turn_times_ms(fns, repeats, warmup)
    return {name: statistics.median(values) for name, values in times.items()}


def environment(attention_status: str) -> list[str]:
    """Lines naming the versions, threads, CPU, commit and neighborhood-attention backend."""
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    git = ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"]
    try:
        commit = subprocess.run(git, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    probe = torch.empty(2, 56, 56, 2, 32)  # DiNAT-T level 0 at 224², fp32
    chosen = resolve_backend("auto", probe, torch.empty(2, 13, 13))
    usable = [name for name, reason in backend_report("cpu").items() if reason is None]
    return [
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, CPU {cpu}, fp32, commit {commit}",
        f"NA backend (auto, fp32 CPU): {chosen} (usable: {', '.join(usable)}); {attention_status}",
    ]


def to_markdown(rows: list[tuple[int, str, dict[str, float]]], batch: int) -> list[str]:
    """The table: per (size, mode) the three times, both ratios to Swin and HF/core."""
    lines = [
        "| input | mode | HF DiNAT ms | core DiNAT ms | HF Swin ms | HF-DiNAT/Swin "
        "| core-DiNAT/Swin | HF/core (ratio diff) | within 10% |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size, mode, ms in rows:
        hf, core, swin = ms["HF DiNAT"], ms["core DiNAT"], ms["HF Swin"]
        diff = hf / core - 1
        lines.append(
            f"| {batch}x{size}x{size} | {mode} | {hf:.1f} | {core:.1f} | {swin:.1f} "
            f"| {hf / swin:.3f} | {core / swin:.3f} | {hf / core:.3f} ({diff:+.1%}) "
            f"| {'yes' if abs(diff) <= GOAL else 'NO'} |"
        )
    return lines


def main(argv: Optional[list[str]] = None) -> int:
    """Runs the benchmark, prints the table and optionally writes it (``--out``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 512])
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--modes", nargs="+", choices=["fwd", "fwdbwd"], default=["fwd", "fwdbwd"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=None, help="also write the table to this .md file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    models, attention_status = build_models()
    params = ", ".join(
        f"{name} {sum(p.numel() for p in m.parameters()) / 1e6:.2f}M" for name, m in models.items()
    )
    header = environment(attention_status) + [
        f"batch {args.batch}, median of {args.repeats} after {args.warmup} warm-up; "
        f"params: {params}"
    ]
    print("\n".join(header), flush=True)
    rows = []
    for size in args.sizes:
        images = torch.randn(args.batch, 3, size, size)
        for mode in args.modes:
            for model in models.values():
                model.train(mode == "fwdbwd")
            fns = {name: step_fn(m, images, mode) for name, m in models.items()}
            start = time.perf_counter()
            ms = median_ms(fns, args.repeats, args.warmup)
            rows.append((size, mode, ms))
            done = ", ".join(f"{name} {value:.0f} ms" for name, value in ms.items())
            print(f"{size}² {mode}: {done} ({time.perf_counter() - start:.0f} s)", flush=True)
    table = to_markdown(rows, args.batch)
    print("\n" + "\n".join(table))
    if args.out:
        Path(args.out).write_text("\n".join(header) + "\n\n" + "\n".join(table) + "\n")
        print(f"wrote {args.out}")
    return 0
