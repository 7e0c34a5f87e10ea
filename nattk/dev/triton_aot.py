"""Ahead-of-time compilation of the Triton kernels for named GPU targets, on any machine.

Triton's interpreter does not enforce what the GPU compiler does (``tl.dot`` shape
rules, shared-memory limits, register pressure). The compiler does, for a named
target, without a GPU. This module compiles *the kernels the JIT would build*, through
the JIT itself: the real launcher (:mod:`nattk.backbones.attention.triton_backend`)
runs on CPU tensors of the right dtype and layout inside
:func:`~nattk.backbones.attention.triton_backend.compile_only`, so every launch goes
through ``JITFunction.run`` (``warmup``: bind, specialise, compile, no launch) while a
:class:`StandInDriver` names the target. The signature, the constexprs, the
divisibility attributes and the count of variants are Triton's own answer for real
tensors. From each compiled kernel's cubin, Triton's bundled ``cuobjdump`` reads
registers, local memory (spills) and the SASS that :mod:`.triton_sass` counts.

Must run in a process where ``TRITON_INTERPRET`` is not ``1`` (the interpreter replaces
the kernels by Python functions): :func:`compile_report` checks.

Triton internals used: ``triton.runtime.driver.driver`` (``set_active`` and its
``_active`` slot), ``JITFunction.device_caches`` and ``CompiledKernel.asm/metadata``;
the same in Triton 3.3, 3.4, 3.6 and 3.7.1.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch

from nattk.backbones.attention.triton_tiling import BACKWARD_DQ_KERNEL as BACKWARD_DQ
from nattk.backbones.attention.triton_tiling import KERNEL_NAMES

from . import triton_sass

#: Compute capability -> the most shared memory one block may use (bytes, opt-in).
SHARED_MEMORY_LIMIT = {90: 227 * 1024, 80: 163 * 1024, 86: 99 * 1024}
TARGET_NAMES = {90: "sm_90 (H100/H200)", 80: "sm_80 (A100)", 86: "sm_86 (RTX 30xx, A10)"}
DTYPES = ("fp16", "bf16", "fp32")
TORCH_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
#: Kernel sizes and head dims of the published models (kernel 11: Mask2Former DiNAT-L).
PUBLISHED_KERNELS = (7, 11)
PUBLISHED_HEAD_DIMS = (32, 48)
#: Head dims outside the published ones, compiled once each (fp16, kernel 7).
EXTRA_HEAD_DIMS = (16, 64, 128)


@dataclass(frozen=True)
class Specialisation:
    """One compiled variant of one kernel.

    Attributes:
        kernel: kernel function name in :mod:`.triton_kernels`.
        dtype: ``"fp16"``, ``"bf16"`` or ``"fp32"``.
        kernel_size: neighborhood size (square).
        head_dim: channels per head.
        rpb: whether the call has a relative position bias.
        heads: attention heads of the call (never specialised: any count compiles the
            same kernel).
        rpb_grad: whether the bias needs a gradient (the dq kernel skips it otherwise).
    """

    kernel: str
    dtype: str
    kernel_size: int
    head_dim: int
    rpb: bool = True
    heads: int = 2
    rpb_grad: bool = True


@dataclass
class CompileResult:
    """Resources and SASS counters of one specialisation compiled for one target."""

    spec: Specialisation
    arch: int
    shared_bytes: int
    registers: int
    local_bytes: int
    num_warps: int
    sass: triton_sass.SassCounters = field(default_factory=triton_sass.SassCounters)

    @property
    def shared_limit(self) -> int:
        return SHARED_MEMORY_LIMIT[self.arch]

    def as_dict(self) -> dict:
        return {**asdict(self.spec), "arch": self.arch, "shared_bytes": self.shared_bytes,
                "registers": self.registers, "local_bytes": self.local_bytes,
                "num_warps": self.num_warps, "sass": self.sass.as_dict()}  # fmt: skip


def published_specialisations() -> list[Specialisation]:
    """Every variant a published model runs, plus the extra head dims and a frozen bias.

    Forward and both backward kernels x fp16/bf16/fp32 x kernel 7/11 x head dim 32/48 x
    with and without rpb; then head dims 16/64/128 (fp16) and 128 (fp32, the largest
    shared memory), kernel 7, once each; and the dq kernel of a frozen bias (no bias
    gradient: its own variant), fp16/bf16, kernel 7/11, head dim 32.
    """
    specs = [
        Specialisation(name, dtype, kernel, dim, rpb)
        for name, dtype, kernel, dim, rpb in itertools.product(
            KERNEL_NAMES, DTYPES, PUBLISHED_KERNELS, PUBLISHED_HEAD_DIMS, (True, False)
        )
    ]
    for name in KERNEL_NAMES:
        specs += [Specialisation(name, "fp16", 7, dim) for dim in EXTRA_HEAD_DIMS]
        specs.append(Specialisation(name, "fp32", 7, max(EXTRA_HEAD_DIMS)))
    specs += [
        Specialisation(BACKWARD_DQ, dtype, kernel, 32, rpb_grad=False)
        for dtype in ("fp16", "bf16")
        for kernel in PUBLISHED_KERNELS
    ]
    return specs


# --------------------------------------------------------------------------- stand-in
class StandInDriver:
    """A Triton driver that names a GPU target and has no GPU behind it.

    While it is Triton's active driver, ``JITFunction.run`` binds, specialises and
    compiles for its target exactly as on that GPU; only launching is impossible, so
    it is used with :func:`~nattk.backbones.attention.triton_backend.compile_only`.
    """

    def __init__(self, arch: int, device: str) -> None:
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)
        self.device = device

    def get_current_device(self) -> str:
        return self.device

    def set_current_device(self, device) -> None:  # pragma: no cover - never asked for
        pass

    def get_current_stream(self, device=None) -> int:
        return 0

    def get_current_target(self):
        return self.target


_STAND_INS = itertools.count()


@contextlib.contextmanager
def stand_in_target(arch: int) -> Iterator[str]:
    """Makes a :class:`StandInDriver` for ``sm_<arch>`` Triton's active driver.

    Yields the stand-in's device key: a new one each time, so the JIT's cache for it
    starts empty and holds exactly what the block compiled.
    """
    from triton.runtime.driver import driver

    device = f"stand-in-sm{arch}-{next(_STAND_INS)}"
    saved = driver.__dict__.get("_active")
    driver.set_active(StandInDriver(arch, device))
    try:
        yield device
    finally:
        if "_active" in driver.__dict__:
            driver._active = saved
        else:  # pragma: no cover - a Triton whose DriverConfig keeps no _active
            driver.reset_active()


def compile_through_the_jit(work, arch: int = 90) -> dict[str, list]:
    """Runs ``work()`` with launches compiled for ``sm_<arch>`` by Triton's JIT, not run.

    ``work`` calls the real launcher on CPU tensors (directly or through a model);
    every launch goes through ``JITFunction.run`` (``warmup``) under a
    :class:`StandInDriver`. Returns the variants compiled, per kernel
    (``triton_backend.jit_variants``): one per distinct specialisation the launches
    asked for.

    Raises:
        RuntimeError: Under ``TRITON_INTERPRET=1`` (nothing would be compiled).
    """
    from nattk.backbones.attention import triton_backend

    with stand_in_target(arch) as device, triton_backend.compile_only(cpu_tensors=True):
        work()
    return triton_backend.jit_variants(device)


def run_launcher(q, k, v, rpb, kernel_size, dilation, rpb_grad: bool = True) -> None:
    """One forward and one backward of the real launcher (outputs are not used)."""
    from nattk.backbones.attention import triton_backend

    scale = q.shape[-1] ** -0.5
    out, lse, probs = triton_backend.attention_forward(q, k, v, rpb, kernel_size, dilation, scale)
    triton_backend.attention_backward(
        torch.empty_like(out), q, k, v, rpb, out, lse, probs, kernel_size, dilation, scale,
        rpb_grad=rpb_grad,
    )  # fmt: skip


def spec_tensors(spec: Specialisation, height: int = 20, width: int = 24, batch: int = 2):
    """q, k, v (views of one qkv tensor, as the module makes them) and rpb for ``spec``."""
    dtype = TORCH_DTYPES[spec.dtype]
    qkv = torch.zeros(batch, height, width, 3, spec.heads, spec.head_dim, dtype=dtype)
    q, k, v = qkv.unbind(3)
    size = spec.kernel_size
    rpb = torch.zeros(spec.heads, 2 * size - 1, 2 * size - 1) if spec.rpb else None
    return q, k, v, rpb


def compile_call(spec: Specialisation, arch: int) -> dict[str, list]:
    """The variants the JIT compiles for one forward and backward of ``spec``'s call."""
    q, k, v, rpb = spec_tensors(spec)
    size = (spec.kernel_size, spec.kernel_size)
    return compile_through_the_jit(
        lambda: run_launcher(q, k, v, rpb, size, (1, 1), rpb_grad=spec.rpb_grad), arch
    )


# --------------------------------------------------------------------------- models
def model_compiles(
    model: torch.nn.Module, height: int, width: int, dtype: torch.dtype, arch: int = 90,
    batch: int = 2, device: str = "cpu",
) -> dict[str, int]:  # fmt: skip
    """How many variants of each kernel the JIT compiles for one training step of ``model``.

    Every attention layer of ``model`` at a ``height x width`` input (its map sizes
    from a shape-only pass, :func:`~nattk.dev.layer_shapes.attention_inputs`) runs its
    own padding and q/k/v projection (so q, k, v are the strided views the module
    makes) in ``dtype``, then a forward and a backward with a trainable bias through
    the real operator and launcher, compiled and not run. On ``"cpu"`` the kernels are
    compiled for ``sm_<arch>`` under a :class:`StandInDriver`; on a CUDA device, for
    that GPU (what a first real step compiles: ``tools/gpu_check.py`` runs it up front).
    """
    import copy

    from nattk.backbones.attention import neighborhood_attention_2d, triton_backend

    from .layer_shapes import attention_inputs

    target = torch.device(device)

    def work():
        for attn, shape in attention_inputs(model, height, width, batch):
            layer = attn if target.type == "cpu" else copy.deepcopy(attn).to(target)
            autocast = torch.autocast(target.type, dtype, enabled=dtype != torch.float32)
            with torch.no_grad(), autocast:
                views = layer._padded_qkv(torch.zeros(shape, device=target))
            q, k, v = (t.detach().to(dtype).requires_grad_() for t in views)
            rpb = None if layer.rpb is None else layer.rpb.detach().float().requires_grad_()
            out = neighborhood_attention_2d(
                q, k, v, layer.kernel_size, layer.dilation, rpb, layer.scale, "triton"
            )
            out.backward(torch.zeros_like(out))

    if target.type == "cpu":
        compiled = compile_through_the_jit(work, arch)
        return {name: len(variants) for name, variants in compiled.items()}
    before = triton_backend.compiled_kernels()
    with triton_backend.compile_only():
        work()
    after = triton_backend.compiled_kernels()
    return {name: after[name] - before[name] for name in after}


# --------------------------------------------------------------------------- compile
def _tool(name: str) -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)


def _cuobjdump(cubin: bytes, *flags: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        return subprocess.run(
            [_tool("cuobjdump"), *flags, str(path)], check=True, capture_output=True, text=True
        ).stdout


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """``(registers, local bytes)`` of the one function in ``cubin``."""
    text = _cuobjdump(cubin, "--dump-resource-usage")
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
    if usage is None:
        raise RuntimeError(f"cannot read resource usage from cuobjdump:\n{text}")
    registers, stack, local = (int(x) for x in usage.groups())
    return registers, max(stack, local)


def compile_specialisations(group: list[Specialisation], arch: int) -> list[CompileResult]:
    """Compiles one call's kernels for ``sm_<arch>`` and reads each spec's resources and SASS.

    Every spec of ``group`` must describe the same call (they differ only in kernel).
    """
    compiled = compile_call(group[0], arch)
    results = []
    for spec in group:
        variants = compiled[spec.kernel]
        if len(variants) != 1:
            raise RuntimeError(
                f"{spec}: the JIT compiled {len(variants)} variants of {spec.kernel}"
            )
        kernel = variants[0]
        cubin = kernel.asm["cubin"]
        registers, local = _resource_usage(cubin)
        counters = triton_sass.counters(_cuobjdump(cubin, "-sass"))
        results.append(CompileResult(
            spec, arch, int(kernel.metadata.shared), registers, local,
            int(kernel.metadata.num_warps), counters,
        ))  # fmt: skip
    return results


def compile_specialisation(spec: Specialisation, arch: int) -> CompileResult:
    """Compiles ``spec`` for compute capability ``arch`` and reads resources and SASS."""
    return compile_specialisations([spec], arch)[0]


def _compile_group(job):
    group, arch = job
    return compile_specialisations(group, arch)


def compile_report(
    specs: Optional[list[Specialisation]] = None, archs=(90, 80, 86), processes: int = 1
) -> list[CompileResult]:
    """Compiles every specialisation for every target (in ``processes`` worker processes).

    Specs of one call (same dtype, kernel size, head dim, bias, heads) are compiled
    together, through Triton's JIT (:func:`compile_through_the_jit`). Results come in
    the order of ``archs`` then ``specs``.

    Raises:
        RuntimeError: When ``TRITON_INTERPRET=1`` (nothing would be compiled).
    """
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET to compile the kernels ahead of time")
    specs = specs or published_specialisations()
    calls: dict[tuple, list[Specialisation]] = {}
    for spec in specs:
        calls.setdefault(_call_of(spec), []).append(spec)
    jobs = [(group, arch) for arch in archs for group in calls.values()]
    if processes <= 1:
        grouped = [_compile_group(job) for job in jobs]
    else:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(processes) as pool:
            grouped = list(pool.map(_compile_group, jobs))
    by_key = {(r.spec, r.arch): r for results in grouped for r in results}
    return [by_key[(spec, arch)] for arch in archs for spec in specs]


def _call_of(spec: Specialisation) -> tuple:
    return (spec.dtype, spec.kernel_size, spec.head_dim, spec.rpb, spec.heads, spec.rpb_grad)


# --------------------------------------------------------------------------- tables
def instructions_per_window_pair(result: CompileResult, height=200, width=336, dilation=1):
    """Non-MMA warp-instructions per in-window pair of one kernel on one layer shape.

    Each key-block loop's non-MMA count per iteration (``fast_loop_other`` for interior
    tiles, ``loop_other`` for border tiles) ``x num_warps``, times the blocks the tiling
    walks on the shape in that loop
    (:func:`nattk.backbones.attention.triton_tiling.key_blocks`: query tiles for the
    forward and dq kernels, key tiles for dk/dv), over the shape's in-window pairs.
    Default shape: COCO stage 1 (800x1333 input), dilation 1.
    """
    from nattk.backbones.attention.triton_tiling import (
        BACKWARD_DKDV_KERNEL,
        key_blocks,
        useful_work,
    )

    size = (result.spec.kernel_size, result.spec.kernel_size)
    useful, _evaluated = useful_work(height, width, size, (dilation, dilation))
    keys = result.spec.kernel.startswith(BACKWARD_DKDV_KERNEL)
    interior, border = key_blocks(height, width, size, (dilation, dilation), keys)
    sass = result.sass
    return (sass.fast_loop_other * interior + sass.loop_other * border) * result.num_warps / useful


def _bias(spec: Specialisation) -> str:
    return ("yes" if spec.rpb_grad else "frozen") if spec.rpb else "no"


def markdown_table(results: list[CompileResult]) -> str:
    """The docs table: one row per specialisation and target."""
    lines = [
        "| target | kernel | dtype | k | head dim | rpb | heads | warps | shared (limit) | "
        "regs | local B | global loads (bits: n) | stores | MMA | loop non-MMA / block "
        "(per warp; interior, border) | non-MMA per window pair | atomics (loop) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, c = r.spec, r.sass
        loads = ", ".join(f"{bits}: {n}" for bits, n in sorted(c.loads.items()))
        stores = ", ".join(f"{bits}: {n}" for bits, n in sorted(c.stores.items()))
        per_pair = instructions_per_window_pair(r)
        lines.append(
            f"| {TARGET_NAMES[r.arch]} | `{s.kernel}` | {s.dtype} | {s.kernel_size} | "
            f"{s.head_dim} | {_bias(s)} | {s.heads} | {r.num_warps} | "
            f"{r.shared_bytes} B ({r.shared_limit // 1024} KiB) | {r.registers} | "
            f"{r.local_bytes} | {loads} | {stores} | {c.mma} | {c.fast_loop_other}, {c.loop_other} | "
            f"{per_pair:.2f} | {c.atomics} ({c.loop_atomics}) |"
        )
    return "\n".join(lines)


__all__ = [
    "CompileResult",
    "Specialisation",
    "StandInDriver",
    "compile_call",
    "compile_report",
    "compile_specialisation",
    "compile_through_the_jit",
    "markdown_table",
    "model_compiles",
    "published_specialisations",
    "run_launcher",
    "stand_in_target",
]
