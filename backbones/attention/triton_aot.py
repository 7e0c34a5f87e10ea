"""Ahead-of-time compilation of the Triton kernels for named GPU targets, on any machine.

Triton's interpreter does not enforce what the GPU compiler does (``tl.dot`` shape
rules, shared-memory limits, register pressure). ``triton.compile`` does, for a
named target, without a GPU: it returns PTX and a cubin, whose resource usage
Triton's bundled ``cuobjdump`` reads. This module compiles every specialisation the
published models use with the arguments the JIT would give them (the same
``tl.constexpr`` values, 16-byte-aligned pointers and strides), and reports shared
memory, registers and local memory (spills) per specialisation.

Must run in a process where ``TRITON_INTERPRET`` is not ``1`` (the interpreter
replaces the kernels by Python functions): :func:`compile_report` checks.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .triton_tiling import tile_shape

#: Compute capability -> the most shared memory one block may use (bytes, opt-in).
SHARED_MEMORY_LIMIT = {90: 227 * 1024, 80: 163 * 1024}
TARGET_NAMES = {90: "sm_90 (H100/H200)", 80: "sm_80 (A100)"}
KERNEL_NAMES = ("na2d_fwd_kernel", "na2d_bwd_dq_kernel", "na2d_bwd_dkdv_kernel")
DTYPES = ("fp16", "bf16", "fp32")
#: Kernel sizes and head dims of the published models (kernel 11: Mask2Former DiNAT-L).
PUBLISHED_KERNELS = (7, 11)
PUBLISHED_HEAD_DIMS = (32, 48)
_FP32_POINTERS = ("rpb_ptr", "lse_ptr", "delta_ptr", "drpb_ptr")
# Arguments the JIT specialises as divisible by 16 at the published shapes
# (head dim 32/48; column stride heads * head_dim); do_not_specialize args never are.
_ALIGNED_INTS = ("head_dim", "s_c", "s_h", "o_c", "o_h")


@dataclass(frozen=True)
class Specialisation:
    """One compiled variant of one kernel."""

    kernel: str
    dtype: str
    kernel_size: int
    head_dim: int


@dataclass(frozen=True)
class CompileResult:
    """Resources of one specialisation compiled for one target."""

    spec: Specialisation
    arch: int
    shared_bytes: int
    registers: int
    local_bytes: int

    @property
    def shared_limit(self) -> int:
        return SHARED_MEMORY_LIMIT[self.arch]

    def as_dict(self) -> dict:
        return {**asdict(self.spec), "arch": self.arch, "shared_bytes": self.shared_bytes,
                "registers": self.registers, "local_bytes": self.local_bytes}  # fmt: skip


def published_specialisations() -> list[Specialisation]:
    """Forward and both backward kernels x fp16/bf16/fp32 x kernel 7/11 x head dim 32/48."""
    return [
        Specialisation(name, dtype, kernel, dim)
        for name, dtype, kernel, dim in itertools.product(
            KERNEL_NAMES, DTYPES, PUBLISHED_KERNELS, PUBLISHED_HEAD_DIMS
        )
    ]


def _source(spec: Specialisation):
    from triton.compiler import ASTSource

    from . import triton_kernels
    from .triton_backend import _block_dim

    fn = getattr(triton_kernels, spec.kernel)
    tile = tile_shape((spec.kernel_size, spec.kernel_size))
    signature, attrs = {}, {}
    for index, param in enumerate(fn.params):
        name = param.name
        if param.is_constexpr:
            signature[name] = "constexpr"
            continue
        if name.endswith("_ptr"):
            signature[name] = "*fp32" if name in _FP32_POINTERS else f"*{spec.dtype}"
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif name == "scale":
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name in _ALIGNED_INTS:
                attrs[(index,)] = [["tt.divisibility", 16]]
    constexprs = dict(
        KH=spec.kernel_size,
        KW=spec.kernel_size,
        TH=tile.rows,
        TW=tile.cols,
        BN=tile.block,
        BD=_block_dim(spec.head_dim),
        HAS_RPB=True,
        IEEE=spec.dtype == "fp32",
    )
    return ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def _cuobjdump() -> str:
    import triton

    return str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """``(registers, local bytes)`` of the one function in ``cubin``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(cubin)
        text = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", str(path)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:\d+ LOCAL:(\d+)", text)
    if usage is None:
        raise RuntimeError(f"cannot read resource usage from cuobjdump:\n{text}")
    registers, stack, local = (int(x) for x in usage.groups())
    return registers, max(stack, local)


def compile_specialisation(spec: Specialisation, arch: int) -> CompileResult:
    """Compiles ``spec`` for compute capability ``arch`` (80 or 90) and reads its resources."""
    import triton
    from triton.backends.compiler import GPUTarget

    from .triton_backend import NUM_STAGES, NUM_WARPS

    compiled = triton.compile(
        _source(spec),
        target=GPUTarget("cuda", arch, 32),
        options=dict(num_warps=NUM_WARPS, num_stages=NUM_STAGES),
    )
    registers, local = _resource_usage(compiled.asm["cubin"])
    return CompileResult(spec, arch, int(compiled.metadata.shared), registers, local)


def _compile_one(job):
    spec, arch = job
    return compile_specialisation(spec, arch)


def compile_report(
    specs: list[Specialisation] | None = None, archs=(90, 80), processes: int = 1
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


def markdown_table(results: list[CompileResult]) -> str:
    """The docs table: one row per specialisation and target."""
    lines = [
        "| target | kernel | dtype | kernel size | head dim | shared memory (limit) | "
        "registers/thread | local (spill) bytes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = r.spec
        lines.append(
            f"| {TARGET_NAMES[r.arch]} | `{s.kernel}` | {s.dtype} | {s.kernel_size} | "
            f"{s.head_dim} | {r.shared_bytes} B ({r.shared_limit // 1024} KiB) | "
            f"{r.registers} | {r.local_bytes} |"
        )
    return "\n".join(lines)
