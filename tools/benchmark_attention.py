"""Benchmark neighborhood attention against Swin window attention and dense attention.

For each layer shape (NAT/DiNAT-Tiny at 224² classification, 800×1216 detection and
512² segmentation) it times, from q/k/v to the attention output:

* ``NA[<backend>]`` — this toolkit's neighborhood attention with rpb, per backend;
* ``Swin WSA`` — Swin's window attention with its relative position bias, written in
  plain PyTorch the way mmdet's ``WindowMSA``/``ShiftWindowMSA`` do it (pad to the
  window, roll, partition, ``q @ kᵀ``, bias, shift mask, softmax, ``@ v``, reverse).
  Swin blocks alternate W-MSA and SW-MSA, so its time is the mean of the two;
* ``dense`` — full ``N × N`` attention with the neighborhood as an additive mask
  (skipped where its score matrix would exceed ``--dense-limit-gb``);
* ``natten.na2d`` — NATTEN >= 0.20 on CPU (forward only, no rpb; it has no CPU
  backward and needs a power-of-two head dim).

Times are medians over at least ``--repeats`` runs (more for short calls, until 1 s
of samples) after a warm-up; "fwd" runs under
``torch.no_grad``. Peak memory is the growth of the process' peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs``) over the resident set before
the measured forward+backward pass, i.e. the extra memory the layer needs on top
of its inputs. Ratios are taken to Swin WSA on the same shape.

Usage::

    python tools/benchmark_attention.py --out bench_out          # CPU, all shapes
    python tools/benchmark_attention.py --device cuda --dtype bf16
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import platform
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from nattk.backbones.attention import neighborhood_attention_2d
from nattk.backbones.attention.indices import grid_indices


@dataclass(frozen=True)
class Shape:
    name: str
    batch: int
    height: int
    width: int
    heads: int
    dim: int
    kernel: int
    dilation: int


def default_shapes() -> list[Shape]:
    """Stage shapes of NAT/DiNAT-Tiny (head dim 32, kernel 7) and the DiNAT dilations."""
    specs = [
        ("cls224 stage1", 2, 56, 56, 2, [1, 8]),
        ("cls224 stage3", 2, 14, 14, 8, [1, 2]),
        ("det800x1216 stage1", 2, 200, 304, 2, [1, 28]),
        ("det800x1216 stage3", 2, 50, 76, 8, [1, 7]),
        ("seg512 stage1", 2, 128, 128, 2, [1, 16]),
        ("natten-cmp 64x64", 2, 64, 64, 2, [1]),
    ]
    return [
        Shape(name, b, h, w, heads, 32, 7, d)
        for name, b, h, w, heads, dilations in specs
        for d in dilations
    ]


@dataclass
class Result:
    shape: str
    tokens: str
    dilation: int
    method: str
    fwd_ms: Optional[float] = None
    fwd_bwd_ms: Optional[float] = None
    peak_extra_mb: Optional[float] = None
    note: str = ""
    ratio_fwd_bwd_to_swin: Optional[float] = field(default=None)


# --------------------------------------------------------------------------- memory
_libc = ctypes.CDLL("libc.so.6") if platform.system() == "Linux" else None


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _cpu_peak_extra_mb(fn: Callable[[], None]) -> Optional[float]:
    if _libc is None:
        return None
    gc.collect()
    _libc.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    base = _status_kb("VmRSS")
    fn()
    return (_status_kb("VmHWM") - base) / 1024


def _cuda_peak_extra_mb(fn: Callable[[], None]) -> float:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# --------------------------------------------------------------------------- methods
def swin_window_attention(q, k, v, bias_table, window: int, shift: int):
    """Swin (SW-)MSA core on ``[B, H, W, heads, D]`` q/k/v, as mmdet's Swin computes it."""
    batch, height, width, heads, dim = q.shape
    pad_h, pad_w = (-height) % window, (-width) % window
    hp, wp = height + pad_h, width + pad_w

    def windows(x):
        x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, pad_w, 0, pad_h))
        if shift:
            x = torch.roll(x, (-shift, -shift), dims=(1, 2))
        x = x.view(batch, hp // window, window, wp // window, window, heads, dim)
        return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, window * window, dim)

    qw, kw, vw = windows(q) * dim**-0.5, windows(k), windows(v)
    attn = qw @ kw.transpose(-2, -1)
    attn = attn + bias_table.unsqueeze(0)
    if shift:
        n_win = (hp // window) * (wp // window)
        attn = (
            attn.view(batch, n_win, heads, window**2, window**2)
            + _shift_mask(hp, wp, window, shift, q.device)[None, :, None]
        )
        attn = attn.view(-1, heads, window**2, window**2)
    out = attn.softmax(-1) @ vw
    out = out.view(batch, hp // window, wp // window, heads, window, window, dim)
    out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, hp, wp, heads, dim)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    return out[:, :height, :width]


def _shift_mask(hp, wp, window, shift, device):
    img = torch.zeros(hp, wp, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[hs, ws] = cnt
            cnt += 1
    win = (
        img.view(hp // window, window, wp // window, window)
        .permute(0, 2, 1, 3)
        .reshape(-1, window * window)
    )
    diff = win[:, None, :] - win[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


def dense_masked_attention(q, k, v, additive_mask):
    batch, height, width, heads, dim = q.shape
    qf, kf, vf = (x.reshape(batch, height * width, heads, dim).transpose(1, 2) for x in (q, k, v))
    attn = (qf * dim**-0.5) @ kf.transpose(-2, -1) + additive_mask
    out = attn.softmax(-1) @ vf
    return out.transpose(1, 2).reshape(q.shape)


def _neighborhood_mask(shape: Shape, device, dtype):
    keys, _ = grid_indices(shape.height, shape.width, (shape.kernel,) * 2, (shape.dilation,) * 2)
    n = shape.height * shape.width
    mask = torch.full((n, n), float("-inf"), dtype=dtype)
    mask.scatter_(1, keys.reshape(n, -1), 0.0)
    return mask.to(device)


# --------------------------------------------------------------------------- timing
def _median_ms(
    fn: Callable[[], None], repeats: int, sync: Callable[[], None], min_time: float = 1.0
) -> float:
    """Median wall time; short calls are repeated until ``min_time`` seconds are covered."""
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    single = time.perf_counter() - start
    repeats = max(repeats, min(1000, int(min_time / max(single, 1e-6))))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def measure(
    shape: Shape, method: str, make_fn, device, dtype, repeats: int, backward: bool
) -> Result:
    torch.manual_seed(0)
    dims = (shape.batch, shape.height, shape.width, shape.heads, shape.dim)
    inputs = [
        torch.randn(dims, device=device, dtype=dtype, requires_grad=backward) for _ in range(3)
    ]
    fn = make_fn(*inputs)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    result = Result(
        shape.name, f"{shape.batch}x{shape.height}x{shape.width}", shape.dilation, method
    )

    def forward():
        with torch.no_grad():
            fn()

    result.fwd_ms = _median_ms(forward, repeats, sync)
    if backward:
        grad = torch.randn(dims, device=device, dtype=dtype)

        def fwd_bwd():
            for t in inputs:
                t.grad = None
            fn().backward(grad)

        result.fwd_bwd_ms = _median_ms(fwd_bwd, repeats, sync)
        peak = _cuda_peak_extra_mb if device.type == "cuda" else _cpu_peak_extra_mb
        result.peak_extra_mb = peak(fwd_bwd)
    return result


def run_shape(shape: Shape, args, device, dtype) -> list[Result]:
    kk = shape.kernel
    rpb = torch.randn(
        shape.heads, 2 * kk - 1, 2 * kk - 1, device=device, dtype=dtype, requires_grad=True
    )
    results = []
    for backend in args.backends:

        def make(q, k, v, backend=backend):
            return lambda: neighborhood_attention_2d(
                q, k, v, kk, shape.dilation, rpb, backend=backend
            )

        try:
            results.append(
                measure(shape, f"NA[{backend}]", make, device, dtype, args.repeats, True)
            )
        except RuntimeError as exc:
            results.append(
                Result(shape.name, "", shape.dilation, f"NA[{backend}]", note=str(exc)[:80])
            )

    window = kk
    coords = torch.stack(
        torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    ).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
    rel_index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
    swin_rpb = torch.randn(
        (2 * window - 1) ** 2, shape.heads, device=device, dtype=dtype, requires_grad=True
    )

    def make_swin(q, k, v):
        def fn():
            table = (
                swin_rpb[rel_index.reshape(-1).to(device)]
                .view(window**2, window**2, -1)
                .permute(2, 0, 1)
            )
            a = swin_window_attention(q, k, v, table, window, 0)
            b = swin_window_attention(q, k, v, table, window, window // 2)
            return (a + b) * 0.5  # one W-MSA + one SW-MSA: time / 2 = mean layer

        return fn

    swin = measure(
        shape, "Swin WSA (mean of W-MSA, SW-MSA)", make_swin, device, dtype, args.repeats, True
    )
    for field_name in ("fwd_ms", "fwd_bwd_ms", "peak_extra_mb"):
        value = getattr(swin, field_name)
        setattr(
            swin,
            field_name,
            None if value is None else value / (1 if field_name == "peak_extra_mb" else 2),
        )
    results.append(swin)

    n = shape.height * shape.width
    dense_gb = shape.batch * shape.heads * n * n * torch.finfo(dtype).bits / 8 / 2**30
    if dense_gb * 3 <= args.dense_limit_gb:
        mask = _neighborhood_mask(shape, device, dtype)
        results.append(
            measure(
                shape,
                "dense masked",
                lambda q, k, v: (lambda: dense_masked_attention(q, k, v, mask)),
                device,
                dtype,
                args.repeats,
                True,
            )
        )
    else:
        results.append(
            Result(
                shape.name,
                "",
                shape.dilation,
                "dense masked",
                note=f"skipped: N×N scores alone need {dense_gb:.1f} GiB",
            )
        )

    if args.natten and device.type == "cpu" and dense_gb * 3 > args.dense_limit_gb:
        # NATTEN's CPU path (eager flex_attention) materialises the N×N scores too.
        results.append(
            Result(
                shape.name,
                "",
                shape.dilation,
                "natten.na2d (no rpb)",
                note=f"skipped: CPU NATTEN materialises {dense_gb:.1f} GiB of scores",
            )
        )
    elif args.natten:
        try:
            import natten

            def make_natten(q, k, v):
                return lambda: natten.na2d(q, k, v, kernel_size=kk, dilation=shape.dilation)

            results.append(
                measure(
                    shape, "natten.na2d (no rpb)", make_natten, device, dtype, args.repeats, False
                )
            )
        except Exception as exc:  # not installed, or refuses the shape
            results.append(
                Result(shape.name, "", shape.dilation, "natten.na2d (no rpb)", note=str(exc)[:80])
            )

    swin_time = swin.fwd_bwd_ms
    for r in results:
        r.tokens = r.tokens or f"{shape.batch}x{shape.height}x{shape.width}"
        if r.fwd_bwd_ms and swin_time:
            r.ratio_fwd_bwd_to_swin = r.fwd_bwd_ms / swin_time
    return results


def to_markdown(results: list[Result], header: str) -> str:
    def fmt(x, spec=".1f"):
        return "" if x is None else format(x, spec)

    lines = [
        header,
        "",
        "| shape | B×H×W | dil | method | fwd ms | fwd+bwd ms | ×Swin (fwd+bwd) | peak extra MB | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.shape} | {r.tokens} | {r.dilation} | {r.method} | {fmt(r.fwd_ms)} | {fmt(r.fwd_bwd_ms)} | "
            f"{fmt(r.ratio_fwd_bwd_to_swin, '.2f')} | {fmt(r.peak_extra_mb, '.0f')} | {r.note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument(
        "--backends", nargs="+", default=None, help="NA backends (default: per device)"
    )
    parser.add_argument("--shapes", nargs="+", default=None, help="substring filter on shape names")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--dense-limit-gb", type=float, default=4.0)
    parser.add_argument("--no-natten", dest="natten", action="store_false")
    parser.add_argument(
        "--out", default="bench_out", help="directory for results.md / results.json"
    )
    args = parser.parse_args(argv)
    # NATTEN's CPU path warns that eager flex_attention is unfused; that is the point.
    warnings.filterwarnings("ignore", module="torch.nn.attention.flex_attention")

    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backends is None:
        args.backends = ["cpu", "torch"] if device.type == "cpu" else ["flex", "torch"]
    shapes = [
        s for s in default_shapes() if not args.shapes or any(f in s.name for f in args.shapes)
    ]

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    header = (
        f"Device: {device_name} ({device.type}, {torch.get_num_threads()} threads), dtype {args.dtype}, "
        f"torch {torch.__version__}, kernel 7, head dim 32, median of {args.repeats}."
    )
    print(header, flush=True)
    results: list[Result] = []
    for shape in shapes:
        rows = run_shape(shape, args, device, dtype)
        results.extend(rows)
        print(to_markdown(rows, "").split("\n", 3)[-1], end="", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(to_markdown(results, header))
    (out / "results.json").write_text(
        json.dumps({"header": header, "results": [asdict(r) for r in results]}, indent=1)
    )
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
