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

On CUDA (``--device cuda``) the suite is the published GPU layer shapes (detection
stage 1/3, segmentation, Mask2Former kernel 11) and the methods are the NA backends
(default ``triton`` and ``torch``), ``Swin WSA (SDPA)`` (window partition + shift +
``scaled_dot_product_attention`` with the bias as its mask) and ``dense SDPA`` over
all tokens (FlashAttention/cuDNN: the ceiling). Every row also gets an effective
TFLOP/s: NA and Swin count only in-window pairs (``4 B heads N k^2 D`` per forward),
dense SDPA its own ``N^2`` pairs; forward+backward counts 3.5x the forward (2
matmuls forward, 5 backward). Before timing, ``--check`` compares the Triton
kernels' fp32/fp16/bf16 forward and gradients with the fp64 ``torch`` backend on
the same device, and the run reports how many kernels Triton compiled across all
the map sizes (one per kernel size/head dim/dtype is the design).

Usage::

    python tools/benchmark_attention.py --out bench_out          # CPU, all shapes
    python tools/benchmark_attention.py --device cuda --dtype bf16 --check
    # dry run of the GPU suite on CPU (Triton interpreter, shapes shrunk):
    TRITON_INTERPRET=1 python tools/benchmark_attention.py --suite gpu --shrink 8 \
        --backends triton torch --check --repeats 1
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from nattk.backbones.attention import neighborhood_attention_2d, triton_backend
from nattk.backbones.attention.indices import grid_indices
from nattk.dev.provenance import git_commit
from nattk.timing import median_ms


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
    """Published layer shapes (head dim 32), each at dilation 1 and its DiNAT dilation.

    NAT/DiNAT-Tiny (kernel 7): ImageNet 224² stages 1-3, COCO 800x1216 stages 1 and 3,
    ADE20K 512² and 640² stage 1; Mask2Former DiNAT-L (kernel 11, 6 heads) at 640².
    """
    specs = [
        ("cls224 stage1", 2, 56, 56, 2, 7, [1, 8]),
        ("cls224 stage2", 2, 28, 28, 4, 7, [1, 4]),
        ("cls224 stage3", 2, 14, 14, 8, 7, [1, 2]),
        ("det800x1216 stage1", 2, 200, 304, 2, 7, [1, 28]),
        ("det800x1216 stage3", 2, 50, 76, 8, 7, [1, 7]),
        ("seg512 stage1", 2, 128, 128, 2, 7, [1, 16]),
        ("seg640 stage1", 2, 160, 160, 2, 7, [1, 20]),
        ("m2f640 stage1 (L, k11)", 1, 160, 160, 6, 11, [1, 14]),
        ("natten-cmp 64x64", 2, 64, 64, 2, 7, [1]),
    ]
    return [
        Shape(name, b, h, w, heads, 32, kernel, d)
        for name, b, h, w, heads, kernel, dilations in specs
        for d in dilations
    ]


def gpu_shapes() -> list[Shape]:
    """Published GPU layer shapes: DiNAT-T/L detection and segmentation, M2F kernel 11."""
    specs = [
        ("det800x1344 stage1 (T)", 2, 200, 336, 2, 7, [1, 28]),
        ("det800x1344 stage3 (T)", 2, 50, 84, 8, 7, [1, 7]),
        ("seg512 stage1 (T)", 2, 128, 128, 2, 7, [1, 16]),
        ("seg640 stage1 (L)", 2, 160, 160, 6, 7, [1, 20]),
        ("m2f640 stage1 (L, k11)", 2, 160, 160, 6, 11, [1, 14]),
        ("m2f640 stage3 (L, k11)", 2, 40, 40, 24, 11, [1, 3]),
    ]
    return [
        Shape(name, b, h, w, heads, 32, kernel, d)
        for name, b, h, w, heads, kernel, dilations in specs
        for d in dilations
    ]


def shrink(shape: Shape, factor: int) -> Shape:
    """A smaller map for dry runs (never below kernel x dilation)."""
    low = shape.kernel * shape.dilation
    return Shape(
        shape.name + f" /{factor}",
        1,
        max(low, shape.height // factor),
        max(low, shape.width // factor),
        shape.heads,
        shape.dim,
        shape.kernel,
        shape.dilation,
    )


def useful_flops(shape: Shape, fwd_bwd: bool) -> float:
    """FLOPs of the in-window pairs: QK and PV forward; x3.5 with the backward."""
    pairs = shape.batch * shape.heads * shape.height * shape.width * shape.kernel**2
    return 4 * pairs * shape.dim * (3.5 if fwd_bwd else 1.0)


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
    tflops_fwd_bwd: Optional[float] = None
    percent_of_matmul: Optional[float] = None


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
def _padded(size: int, window: int) -> int:
    return size + (-size) % window


def _partition(x, window: int, shift: int):
    """Pads, cyclically shifts and splits ``[B, H, W, heads, D]`` into windows.

    Returns ``[B·n_windows, heads, window², D]``.
    """
    batch, height, width, heads, dim = x.shape
    hp, wp = _padded(height, window), _padded(width, window)
    x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, wp - width, 0, hp - height))
    if shift:
        x = torch.roll(x, (-shift, -shift), dims=(1, 2))
    x = x.view(batch, hp // window, window, wp // window, window, heads, dim)
    return x.permute(0, 1, 3, 5, 2, 4, 6).reshape(-1, heads, window * window, dim)


def _merge(out, shape, window: int, shift: int):
    """Inverse of :func:`_partition` for an output; crops the padding."""
    batch, height, width, heads, dim = shape
    hp, wp = _padded(height, window), _padded(width, window)
    out = out.view(batch, hp // window, wp // window, heads, window, window, dim)
    out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, hp, wp, heads, dim)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    return out[:, :height, :width]


def swin_window_attention(q, k, v, bias_table, window: int, shift: int):
    """Swin (SW-)MSA core on ``[B, H, W, heads, D]`` q/k/v, as mmdet's Swin computes it."""
    hp, wp = _padded(q.shape[1], window), _padded(q.shape[2], window)
    attn = (_partition(q, window, shift) * q.shape[-1] ** -0.5) @ _partition(
        k, window, shift
    ).transpose(-2, -1)
    attn = attn + bias_table.unsqueeze(0)
    if shift:
        n_win, heads = (hp // window) * (wp // window), q.shape[3]
        attn = (
            attn.view(q.shape[0], n_win, heads, window**2, window**2)
            + _shift_mask(hp, wp, window, shift, q.device)[None, :, None]
        )
        attn = attn.view(-1, heads, window**2, window**2)
    return _merge(attn.softmax(-1) @ _partition(v, window, shift), q.shape, window, shift)


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


def _swin_layer_pair(attention, bias, window: int):
    """``make(q, k, v)`` of one W-MSA plus one SW-MSA (Swin alternates them).

    ``bias()`` gives the ``[heads, window², window²]`` bias inside the timed call, so
    its gather is timed too where it is computed.
    """

    def make(q, k, v):
        def fn():
            table = bias()
            return (
                attention(q, k, v, table, window, 0)
                + attention(q, k, v, table, window, window // 2)
            ) * 0.5

        return fn

    return make


def _per_layer(pair: Result) -> Result:
    """Halves the times of a :func:`_swin_layer_pair` measurement: the mean layer."""
    pair.fwd_ms = None if pair.fwd_ms is None else pair.fwd_ms / 2
    pair.fwd_bwd_ms = None if pair.fwd_bwd_ms is None else pair.fwd_bwd_ms / 2
    return pair


def swin_window_sdpa(q, k, v, bias, window: int, shift: int):
    """Swin (SW-)MSA as window partition + ``scaled_dot_product_attention``.

    ``bias`` is ``[heads, window², window²]``; the shift mask is added to it, so SDPA
    gets one additive float mask (its memory-efficient kernel takes that).
    """
    batch, heads = q.shape[0], q.shape[3]
    hp, wp = _padded(q.shape[1], window), _padded(q.shape[2], window)
    n_win = (hp // window) * (wp // window)
    mask = bias.to(q.dtype)[None, None]
    if shift:
        mask = mask + _shift_mask(hp, wp, window, shift, q.device).to(q.dtype)[None, :, None]
    mask = mask.expand(batch, n_win, heads, window**2, window**2).reshape(
        -1, heads, window**2, window**2
    )
    windows = [_partition(x, window, shift) for x in (q, k, v)]
    out = torch.nn.functional.scaled_dot_product_attention(*windows, mask)
    return _merge(out, q.shape, window, shift)


def dense_sdpa(q, k, v):
    """Unmasked attention over all tokens (FlashAttention/cuDNN on CUDA)."""
    batch, height, width, heads, dim = q.shape
    qf, kf, vf = (x.reshape(batch, height * width, heads, dim).transpose(1, 2) for x in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(qf, kf, vf)
    return out.transpose(1, 2).reshape(q.shape)


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
def _median_ms(fn: Callable[[], None], repeats: int, device, min_time: float = 1.0) -> float:
    """Median time of ``fn`` in ms.

    On CUDA Triton's ``do_bench`` (CUDA events, L2 flushed between runs; present in
    Triton 3.6 and 3.7); elsewhere wall time (:func:`nattk.timing.median_ms`), short
    calls repeated until ``min_time`` seconds are covered.
    """
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=max(50, 20 * repeats), return_mode="median"))
    return median_ms(fn, repeats, warmup=1, device=device, min_time=min_time)


def measure(
    shape: Shape, method: str, make_fn, device, dtype, repeats: int, backward: bool
) -> Result:
    torch.manual_seed(0)
    dims = (shape.batch, shape.height, shape.width, shape.heads, shape.dim)
    inputs = [
        torch.randn(dims, device=device, dtype=dtype, requires_grad=backward) for _ in range(3)
    ]
    fn = make_fn(*inputs)
    result = Result(
        shape.name, f"{shape.batch}x{shape.height}x{shape.width}", shape.dilation, method
    )

    def forward():
        with torch.no_grad():
            fn()

    result.fwd_ms = _median_ms(forward, repeats, device)
    if backward:
        grad = torch.randn(dims, device=device, dtype=dtype)

        def fwd_bwd():
            for t in inputs:
                t.grad = None
            fn().backward(grad)

        result.fwd_bwd_ms = _median_ms(fwd_bwd, repeats, device)
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

    def table():
        return (
            swin_rpb[rel_index.reshape(-1).to(device)]
            .view(window**2, window**2, -1)
            .permute(2, 0, 1)
        )

    make_swin = _swin_layer_pair(swin_window_attention, table, window)
    swin = _per_layer(
        measure(
            shape, "Swin WSA (mean of W-MSA, SW-MSA)", make_swin, device, dtype, args.repeats, True
        )
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


def _na_rows(shape: Shape, args, device, dtype, rpb) -> list[Result]:
    rows = []
    for backend in args.backends:

        def make(q, k, v, backend=backend):
            return lambda: neighborhood_attention_2d(
                q, k, v, shape.kernel, shape.dilation, rpb, backend=backend
            )

        try:
            rows.append(measure(shape, f"NA[{backend}]", make, device, dtype, args.repeats, True))
        except RuntimeError as exc:
            rows.append(
                Result(shape.name, "", shape.dilation, f"NA[{backend}]", note=str(exc)[:80])
            )
    return rows


def run_shape_gpu(shape: Shape, args, device, dtype) -> list[Result]:
    """NA backends, Swin window attention on SDPA, dense SDPA; with effective TFLOP/s."""
    kk = shape.kernel
    rpb = torch.randn(shape.heads, 2 * kk - 1, 2 * kk - 1, device=device, requires_grad=True)
    results = _na_rows(shape, args, device, dtype, rpb)
    swin_bias = torch.randn(shape.heads, kk * kk, kk * kk, device=device, requires_grad=True)

    make_swin = _swin_layer_pair(swin_window_sdpa, lambda: swin_bias, kk)
    swin = _per_layer(
        measure(
            shape, "Swin WSA (SDPA, mean of W/SW)", make_swin, device, dtype, args.repeats, True
        )
    )
    results.append(swin)
    dense = measure(
        shape, "dense SDPA (all tokens)", lambda q, k, v: (lambda: dense_sdpa(q, k, v)),
        device, dtype, args.repeats, True,
    )  # fmt: skip
    results.append(dense)
    n = shape.height * shape.width
    for r in results:
        r.tokens = r.tokens or f"{shape.batch}x{shape.height}x{shape.width}"
        if r.fwd_bwd_ms:
            flops = useful_flops(shape, True)
            if r is dense:  # its own work: every query with every key
                flops *= n / shape.kernel**2
            r.tflops_fwd_bwd = flops / (r.fwd_bwd_ms * 1e-3) / 1e12
            r.ratio_fwd_bwd_to_swin = r.fwd_bwd_ms / swin.fwd_bwd_ms
    return results


def matmul_ceiling_tflops(device, dtype=torch.bfloat16, size: int = 8192) -> float:
    """Measured TFLOP/s of one ``size``-cubed matrix product on random data (the ceiling)."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    ms = _median_ms(lambda: a @ b, 5, device)
    return 2 * size**3 / (ms * 1e-3) / 1e12


def _grads_of(shape: Shape, backend: str, dtype, q, k, v, rpb, grad) -> list:
    """``[out, dq, dk, dv, drpb]`` in ``dtype`` (the bias stays an fp32 parameter)."""
    leaves = [x.detach().to(dtype).requires_grad_(True) for x in (q, k, v)]
    bias = rpb.detach().to(torch.float32 if dtype != torch.float64 else dtype)
    bias.requires_grad_(True)
    out = neighborhood_attention_2d(*leaves, shape.kernel, shape.dilation, bias, backend=backend)
    return [out, *torch.autograd.grad(out, [*leaves, bias], grad.to(dtype))]


def check_correctness(shapes: list[Shape], device, batch: int = 1) -> list[dict]:
    """Triton vs the fp64 ``torch`` backend, next to the ``torch`` backend's own error."""
    rows = []
    for shape in shapes:
        dims = (batch, shape.height, shape.width, shape.heads, shape.dim)
        gen = torch.Generator(device=device).manual_seed(0)
        q, k, v, grad = (torch.randn(dims, device=device, generator=gen, dtype=torch.float64)
                         for _ in range(4))  # fmt: skip
        kk = shape.kernel
        rpb = torch.randn(shape.heads, 2 * kk - 1, 2 * kk - 1, device=device, dtype=torch.float64)

        tensors = (q, k, v, rpb, grad)
        reference = _grads_of(shape, "torch", torch.float64, *tensors)
        dtypes = [torch.float32, torch.float16, torch.bfloat16]
        if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1":
            dtypes.pop()  # the interpreter's bf16 arithmetic is wrong: bf16 on a GPU only
        for dtype in dtypes:
            errors = {}
            for backend in ("triton", "torch"):
                values = _grads_of(shape, backend, dtype, *tensors)
                errors[backend] = [
                    ((a.double() - b).abs().max() / b.abs().max()).item()
                    for a, b in zip(values, reference)
                ]
            floor = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
            ok = all(t <= max(2 * r, floor) for t, r in zip(errors["triton"], errors["torch"]))
            rows.append(dict(shape=shape.name, dilation=shape.dilation, dtype=str(dtype)[6:],
                             triton=errors["triton"], torch=errors["torch"], ok=ok))  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def correctness_markdown(rows: list[dict]) -> str:
    lines = [
        "| shape | dil | dtype | Triton rel. err (out, dq, dk, dv, drpb) | torch backend rel. err | ok |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        fmt = lambda xs: ", ".join(f"{x:.1e}" for x in xs)  # noqa: E731
        lines.append(
            f"| {r['shape']} | {r['dilation']} | {r['dtype']} | {fmt(r['triton'])} | "
            f"{fmt(r['torch'])} | {'yes' if r['ok'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def to_markdown(results: list[Result], header: str) -> str:
    def fmt(x, spec=".1f"):
        return "" if x is None else format(x, spec)

    lines = [
        header,
        "",
        "| shape | B×H×W | dil | method | fwd ms | fwd+bwd ms | ×Swin (fwd+bwd) | "
        "eff. TFLOP/s (fwd+bwd) | % of matmul | peak extra MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.shape} | {r.tokens} | {r.dilation} | {r.method} | {fmt(r.fwd_ms)} | {fmt(r.fwd_bwd_ms)} | "
            f"{fmt(r.ratio_fwd_bwd_to_swin, '.2f')} | {fmt(r.tflops_fwd_bwd, '.2f')} | "
            f"{fmt(r.percent_of_matmul, '.1f')} | {fmt(r.peak_extra_mb, '.0f')} | {r.note} |"
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
    parser.add_argument(
        "--dilations", type=int, nargs="+", default=None, help="only these dilations"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--dense-limit-gb", type=float, default=4.0)
    parser.add_argument("--no-natten", dest="natten", action="store_false")
    parser.add_argument(
        "--suite", choices=["cpu", "gpu"], default=None, help="default: gpu on CUDA, else cpu"
    )
    parser.add_argument("--shrink", type=int, default=1, help="divide map sizes (dry runs)")
    parser.add_argument(
        "--check", action="store_true", help="first compare Triton with the fp64 torch backend"
    )
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
    suite = args.suite or ("gpu" if device.type == "cuda" else "cpu")
    if args.backends is None:
        args.backends = ["cpu", "torch"] if suite == "cpu" else ["triton", "torch"]
    shapes = [
        s
        for s in (default_shapes() if suite == "cpu" else gpu_shapes())
        if (not args.shapes or any(f in s.name for f in args.shapes))
        and (not args.dilations or s.dilation in args.dilations)
    ]
    if args.shrink > 1:
        shapes = [shrink(s, args.shrink) for s in shapes]

    device_name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or platform.machine())
    )
    header = (
        f"Device: {device_name} ({device.type}, {torch.get_num_threads()} threads), dtype {args.dtype}, "
        f"torch {torch.__version__}, head dim 32, median of {args.repeats}, "
        f"commit {git_commit()}."
    )
    print(header, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ceiling = None
    if suite == "gpu":
        ceiling = matmul_ceiling_tflops(device, size=8192 // args.shrink)
        header += f" Measured {args.dtype} matmul ceiling: {ceiling:.0f} TFLOP/s."
        print(f"matmul ceiling: {ceiling:.1f} TFLOP/s", flush=True)
    if args.check:
        checks = check_correctness(shapes, device)
        (out / "correctness.md").write_text(header + "\n\n" + correctness_markdown(checks))
        (out / "correctness.json").write_text(json.dumps(checks, indent=1))
        print(correctness_markdown(checks), flush=True)
    results: list[Result] = []
    for shape in shapes:
        run = run_shape if suite == "cpu" else run_shape_gpu
        rows = run(shape, args, device, dtype)
        for r in rows:
            if ceiling and r.tflops_fwd_bwd:
                r.percent_of_matmul = 100 * r.tflops_fwd_bwd / ceiling
        results.extend(rows)
        print(to_markdown(rows, "").split("\n", 3)[-1], end="", flush=True)

    if "triton" in args.backends:
        variants = triton_backend.compiled_kernels()
        header += f" Triton kernels compiled over all map sizes: {variants}."
        print(f"compiled Triton variants: {variants}", flush=True)
    (out / "results.md").write_text(to_markdown(results, header))
    (out / "results.json").write_text(
        json.dumps({"header": header, "results": [asdict(r) for r in results]}, indent=1)
    )
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
