"""Ahead-of-time compilation of the Triton kernels for named GPU targets, on any machine.

Triton's interpreter does not enforce what the GPU compiler does (``tl.dot`` shape
rules, shared-memory limits, register pressure). ``triton.compile`` does, for a named
target, without a GPU. This module compiles *the kernel the JIT would build*: it runs
the real launcher (:mod:`nattk.backbones.attention.triton_backend`) on CPU tensors of the right dtype and layout,
captures each launch instead of running it, and hands the captured arguments to the
JIT's own binder (Triton's ``specialize`` machinery, the code ``JITFunction.run``
uses). So the signature, the constexprs and the divisibility attributes are Triton's
own answer for real tensors, not a list kept here. From the cubin, Triton's bundled
``cuobjdump`` reads registers, local memory (spills) and the SASS that
:mod:`.triton_sass` counts.

Must run in a process where ``TRITON_INTERPRET`` is not ``1`` (the interpreter replaces
the kernels by Python functions): :func:`compile_report` checks.

Uses two Triton internals, present in the pinned triton 3.7.1:
``triton.runtime.jit.create_function_from_signature`` (builds the binder the JIT calls on
every launch) and ``JITFunction._pack_args`` (turns its specialisation into signature,
constexprs and attributes). :func:`_jit_internals` fails with a clear message where
they are missing.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

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
        heads: attention heads of the call (1 specialises differently).
    """

    kernel: str
    dtype: str
    kernel_size: int
    head_dim: int
    rpb: bool = True
    heads: int = 2


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
    """Every variant a published model runs, plus the extra head dims and ``heads == 1``.

    Forward and both backward kernels x fp16/bf16/fp32 x kernel 7/11 x head dim 32/48 x
    with and without rpb; then head dims 16/64/128 (fp16) and 128 (fp32, the largest
    shared memory) and one head, kernel 7, once each.
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
        specs.append(Specialisation(name, "fp16", 7, 32, heads=1))
    return specs


# --------------------------------------------------------------------------- capture
@dataclass
class Launch:
    """One kernel launch as the launcher would make it: name, positional args, options."""

    name: str
    args: tuple
    constants: dict


def capture_launches(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rpb: Optional[torch.Tensor],
    kernel_size: tuple[int, int],
    dilation: tuple[int, int],
) -> list[Launch]:
    """The launches a forward and a backward of the real launcher make, without running them.

    Works on CPU tensors without the interpreter: :class:`~nattk.backbones.attention.triton_backend._Launch` is
    swapped for a recorder for the duration of the call.
    """
    from nattk.backbones.attention import triton_backend

    launches: list[Launch] = []

    class Recorder(triton_backend._Launch):
        def __call__(self, name, *args, **extra_constants):
            launches.append(Launch(name, args, self.kernel_constants(name, **extra_constants)))

    original = triton_backend._Launch
    triton_backend._Launch = Recorder
    try:
        scale = q.shape[-1] ** -0.5
        out, lse, probs = triton_backend.attention_forward(
            q, k, v, rpb, kernel_size, dilation, scale
        )
        triton_backend.attention_backward(
            torch.empty_like(out), q, k, v, rpb, out, lse, probs, kernel_size, dilation, scale
        )
    finally:
        triton_backend._Launch = original
    return launches


def spec_tensors(spec: Specialisation, height: int = 20, width: int = 24, batch: int = 2):
    """q, k, v (views of one qkv tensor, as the module makes them) and rpb for ``spec``."""
    dtype = TORCH_DTYPES[spec.dtype]
    qkv = torch.zeros(batch, height, width, 3, spec.heads, spec.head_dim, dtype=dtype)
    q, k, v = qkv.unbind(3)
    size = spec.kernel_size
    rpb = torch.zeros(spec.heads, 2 * size - 1, 2 * size - 1) if spec.rpb else None
    return q, k, v, rpb


def spec_launch(spec: Specialisation) -> Launch:
    """The launch of ``spec.kernel`` that the launcher makes for ``spec``'s tensors."""
    q, k, v, rpb = spec_tensors(spec)
    size = (spec.kernel_size, spec.kernel_size)
    for launch in capture_launches(q, k, v, rpb, size, (1, 1)):
        if launch.name.startswith(spec.kernel):
            return launch
    raise LookupError(f"the launcher made no {spec.kernel} launch for {spec}")


# --------------------------------------------------------------------------- JIT binder
def _jit_internals():
    try:
        from triton.compiler.compiler import make_backend
        from triton.runtime.jit import JITFunction, create_function_from_signature
    except ImportError as error:  # pragma: no cover - depends on the Triton version
        raise RuntimeError(
            f"this Triton version lacks the JIT internals the compile report uses ({error}); "
            "use the pinned triton 3.7.1"
        ) from error
    if not hasattr(JITFunction, "_pack_args"):  # pragma: no cover
        raise RuntimeError("this Triton version has no JITFunction._pack_args (use triton 3.7.1)")
    return make_backend, JITFunction, create_function_from_signature


def _jit_function(name: str):
    from nattk.backbones.attention import triton_kernels

    _make_backend, JITFunction, _create = _jit_internals()
    fn = getattr(triton_kernels, name)
    if not isinstance(fn, JITFunction):
        raise RuntimeError(
            f"{name} is not a JITFunction (TRITON_INTERPRET=1?): unset it to compile ahead of time"
        )
    return fn


def specialisation_key(launch: Launch, arch: int = 90) -> tuple:
    """The JIT's cache key of ``launch`` for ``arch``: what picks (or compiles) a kernel.

    The same tuple ``JITFunction.run`` computes from the bound arguments (types,
    constexpr values, divisibility / equal-to-1 classes) and the options.
    """
    from triton.backends.compiler import GPUTarget

    make_backend, _jit, create_function_from_signature = _jit_internals()
    fn = _jit_function(launch.name)
    backend = make_backend(GPUTarget("cuda", arch, 32))
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    _bound, specialization, options = binder(*launch.args, **launch.constants)
    return tuple(specialization), str(sorted(options.items()))


def jit_source(launch: Launch, arch: int):
    """``(ASTSource, options, target)`` exactly as the JIT would build them for ``launch``."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    make_backend, _jit, create_function_from_signature = _jit_internals()
    fn = _jit_function(launch.name)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.constants)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, dict(launch.constants), bound, specialization, options
    )
    return ASTSource(fn, signature, constexprs, attrs), options, target


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


def compile_launch(launch: Launch, arch: int):
    """The compiled kernel (PTX, cubin, metadata) the JIT would build for ``launch``."""
    import triton

    source, options, target = jit_source(launch, arch)
    return triton.compile(source, target=target, options=options.__dict__)


def compile_specialisation(spec: Specialisation, arch: int) -> CompileResult:
    """Compiles ``spec`` for compute capability ``arch`` and reads resources and SASS."""
    launch = spec_launch(spec)
    compiled = compile_launch(launch, arch)
    cubin = compiled.asm["cubin"]
    registers, local = _resource_usage(cubin)
    counters = triton_sass.counters(_cuobjdump(cubin, "-sass"))
    return CompileResult(
        spec, arch, int(compiled.metadata.shared), registers, local,
        launch.constants["num_warps"], counters,
    )  # fmt: skip


def _compile_one(job):
    spec, arch = job
    return compile_specialisation(spec, arch)


def compile_report(
    specs: Optional[list[Specialisation]] = None, archs=(90, 80, 86), processes: int = 1
) -> list[CompileResult]:
    """Compiles every specialisation for every target (in ``processes`` worker processes).

    Raises:
        RuntimeError: When ``TRITON_INTERPRET=1`` (nothing would be compiled).
    """
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        raise RuntimeError("unset TRITON_INTERPRET to compile the kernels ahead of time")
    jobs = [(spec, arch) for arch in archs for spec in (specs or published_specialisations())]
    if processes <= 1:
        return [_compile_one(job) for job in jobs]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(processes) as pool:
        return list(pool.map(_compile_one, jobs))


# --------------------------------------------------------------------------- tables
def instructions_per_window_pair(result: CompileResult, height=200, width=336, dilation=1):
    """Forward non-MMA warp-instructions per in-window pair on one layer shape.

    ``loop_other x num_warps`` per key block, times the key blocks the tiling walks on
    the shape (:func:`nattk.backbones.attention.triton_tiling.useful_work`), over its in-window pairs. Default
    shape: COCO stage 1 (800x1333 input), dilation 1.
    """
    from nattk.backbones.attention.triton_tiling import tile_shape, useful_work

    size = (result.spec.kernel_size, result.spec.kernel_size)
    useful, evaluated = useful_work(height, width, size, (dilation, dilation))
    tile = tile_shape(size)
    blocks = evaluated / (tile.size * tile.block)
    return result.sass.loop_other * result.num_warps * blocks / useful


def markdown_table(results: list[CompileResult]) -> str:
    """The docs table: one row per specialisation and target."""
    lines = [
        "| target | kernel | dtype | k | head dim | rpb | heads | warps | shared (limit) | "
        "regs | local B | global loads (bits: n) | stores | MMA | loop non-MMA / block "
        "(per warp) | non-MMA per window pair | atomics (loop) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s, c = r.spec, r.sass
        loads = ", ".join(f"{bits}: {n}" for bits, n in sorted(c.loads.items()))
        stores = ", ".join(f"{bits}: {n}" for bits, n in sorted(c.stores.items()))
        per_pair = instructions_per_window_pair(r)
        lines.append(
            f"| {TARGET_NAMES[r.arch]} | `{s.kernel}` | {s.dtype} | {s.kernel_size} | "
            f"{s.head_dim} | {'yes' if s.rpb else 'no'} | {s.heads} | {r.num_warps} | "
            f"{r.shared_bytes} B ({r.shared_limit // 1024} KiB) | {r.registers} | "
            f"{r.local_bytes} | {loads} | {stores} | {c.mma} | {c.loop_other} | "
            f"{per_pair:.2f} | {c.atomics} ({c.loop_atomics}) |"
        )
    return "\n".join(lines)


__all__ = [
    "CompileResult",
    "Launch",
    "Specialisation",
    "capture_launches",
    "compile_launch",
    "compile_report",
    "compile_specialisation",
    "jit_source",
    "markdown_table",
    "published_specialisations",
    "specialisation_key",
]
