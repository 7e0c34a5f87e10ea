"""Fused neighborhood attention on GPUs through the Triton kernels of :mod:`.triton_kernels`.

Plain forward/backward functions with the signatures of :mod:`.torch_backend`;
:mod:`.ops` registers them as the ``triton`` implementation of ``nattk::na2d``.
The forward keeps only its output and an fp32 log-sum-exp per query; the backward
recomputes the scores (flash-attention style) in two kernels: one over query tiles
(``dq`` and the bias gradient), one over key tiles (``dk``, ``dv``).

Bias gradient: each dq program first reduces its pairs in registers, per query and
window slot (a ``tl.gather`` from every key block's score gradient); a tile whose
windows are all unclamped then adds one value per window offset with fp32 atomics
(49 for kernel 7, 121 for kernel 11), a border tile one per query and offset. The
atomics are striped over :data:`DRPB_COPIES` copies of the table (picked by tile),
summed here in fp32. Atomics are not bitwise deterministic: under
``torch.use_deterministic_algorithms(True)`` the backward with a bias raises (warns
with ``warn_only=True``).

Runs on CUDA tensors; on CPU tensors only under Triton's interpreter
(``TRITON_INTERPRET=1`` set before this package is imported), which is how the
kernels are tested without a GPU.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from functools import cache
from typing import Iterator, NamedTuple, Optional

import torch

from .backend_api import Call, as_call
from .triton_tiling import (
    BACKWARD_DKDV_KERNEL,
    BACKWARD_DQ_KERNEL,
    FORWARD_KERNEL,
    KERNEL_NAMES,
    grid_size,
    interior_pairs,
    interior_path,
    launch_config,
    shared_memory_bound,
    tile_shape,
    tiles_per_axis,
)

NAME = "triton"
#: Not yet run on a GPU: only when forced.
AUTO = False
FUSED = True
UNFUSED = False
IN_OPERATOR = True
#: The fused op recomputes the softmax in backward.
KEEPS_PROBS = False
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
MAX_HEAD_DIM = 128
#: Copies of the bias-gradient table the atomics are spread over.
DRPB_COPIES = 32


@cache
def _kernels():
    from . import triton_kernels

    return triton_kernels


# Looked up once, without importing Triton (a plain constant for torch.compile to read).
_TRITON_FOUND = importlib.util.find_spec("triton") is not None


def import_error() -> Optional[str]:
    """Why Triton cannot be used (``None`` when it is installed)."""
    return None if _TRITON_FOUND else "triton is not installed (pip install triton)"


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


#: The oldest Triton the kernels compile with: 3.2 lacks ``tl.gather``; 3.3, 3.4, 3.6 and
#: 3.7.1 compile them (docs/attention.md). PyTorch 2.7 ships Triton 3.3.
MIN_TRITON = (3, 3)
#: The oldest compute capability per dtype: bf16 tensor-core products need Ampere
#: (sm_80); fp16/fp32 compile for Turing (sm_75), Triton's oldest mma target here.
MIN_CAPABILITY = {torch.bfloat16: (8, 0), torch.float16: (7, 5), torch.float32: (7, 5)}
#: Offsets inside one image are 32-bit in the kernels (the batch offset is 64-bit).
MAX_IMAGE_OFFSET = 2**31 - 1


def unsupported_reason(call: Call | torch.Tensor) -> Optional[str]:
    """Why the Triton kernels cannot serve ``call`` (``None`` when they can).

    Each reason is one sentence that names what to do instead.
    """
    call = as_call(call)
    x, dtype = call.q, call.dtype
    reason = import_error()
    if reason is not None:
        return reason
    version = triton_version()
    if version < MIN_TRITON:
        return (
            f"triton {'.'.join(map(str, version))} is older than "
            f"{'.'.join(map(str, MIN_TRITON))}, the oldest the kernels compile with: "
            f"pip install 'triton>={'.'.join(map(str, MIN_TRITON))}' (or torch>=2.7)"
        )
    on_cpu_ok = interpreting() or (_CompileMode.active and _CompileMode.cpu_tensors)
    if x.device.type != "cuda" and not (x.device.type == "cpu" and on_cpu_ok):
        return f"tensor is on {x.device}; Triton kernels need CUDA (or TRITON_INTERPRET=1 on CPU)"
    if dtype not in SUPPORTED_DTYPES:
        return f"dtype {dtype} is not float16/bfloat16/float32"
    if x.shape[-1] > MAX_HEAD_DIM:
        return f"head_dim {x.shape[-1]} is larger than {MAX_HEAD_DIM}"
    reason = offset_reason(x)
    if reason is not None:
        return reason
    facts = device_facts(x.device)
    if facts is None:
        return None
    need = MIN_CAPABILITY[dtype]
    if facts.capability < need:
        have = "sm_{}{}".format(*facts.capability)
        instead = "float16 or backend='torch'" if dtype == torch.bfloat16 else "backend='torch'"
        return (
            f"{dtype} on {facts.name} ({have}): the triton kernels need "
            f"sm_{need[0]}{need[1]} or newer for it; use {instead}"
        )
    return shared_memory_reason(dtype, x.shape[-1], facts.shared_memory, facts.name)


def triton_version() -> tuple[int, ...]:
    """The installed Triton's ``(major, minor)`` (``(0, 0)`` when none is installed)."""
    return _TRITON_VERSION


def _read_triton_version() -> tuple[int, ...]:
    """Read from the package metadata, without importing Triton."""
    from importlib import metadata

    for name in ("triton", "pytorch-triton"):
        try:
            text = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        parts = []
        for piece in text.split(".")[:2]:
            digits = "".join(ch for ch in piece if ch.isdigit())
            parts.append(int(digits or 0))
        return tuple(parts)
    return (0, 0)


# Read once (a plain constant for torch.compile to read, like _TRITON_FOUND).
_TRITON_VERSION = _read_triton_version()


def offset_reason(x: torch.Tensor) -> Optional[str]:
    """Why one image of ``x`` (``[B, H, W, heads, D]``, or its contiguous copy and output)
    is too large for the kernels' 32-bit offsets (``None`` when it fits)."""
    _batch, height, width, heads, dim = x.shape
    strided = (height - 1) * abs(x.stride(1)) + (width - 1) * abs(x.stride(2))
    strided += (heads - 1) * abs(x.stride(3)) + dim
    span = max(strided, height * width * heads * dim)
    if span <= MAX_IMAGE_OFFSET:
        return None
    return (
        f"one image spans {span} elements ({height}x{width} map, {heads} heads of {dim}), "
        f"beyond the triton kernels' 32-bit offsets ({MAX_IMAGE_OFFSET}): use backend='torch'"
    )


class DeviceFacts(NamedTuple):
    """What the refusals read of a GPU."""

    name: str
    capability: tuple[int, int]
    shared_memory: int


def device_facts(device: torch.device) -> Optional[DeviceFacts]:
    """Name, compute capability and opt-in shared memory per block of a CUDA ``device``
    (``None`` for a CPU tensor under the interpreter or a stand-in compile)."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _device_facts(index)


@cache
def _device_facts(index: int) -> DeviceFacts:
    props = torch.cuda.get_device_properties(index)
    # Not in torch's type stubs, but set on CUDA builds (what Triton's launcher checks).
    shared = getattr(props, "shared_memory_per_block_optin", props.shared_memory_per_block)
    return DeviceFacts(props.name, (props.major, props.minor), shared)


def shared_memory_reason(
    dtype: torch.dtype, head_dim: int, limit: int, device_name: str = "this GPU"
) -> Optional[str]:
    """Why the kernels for ``dtype``/``head_dim`` do not fit ``limit`` bytes of shared
    memory per block (``None`` when they fit), from the bound checked in CI."""
    need = shared_memory_bound(torch.finfo(dtype).bits, _block_dim(head_dim))
    if need <= limit:
        return None
    return (
        f"{dtype} with head_dim {head_dim} needs up to {need} bytes of shared memory per "
        f"block; {device_name} allows {limit}"
    )


def _block_dim(head_dim: int) -> int:
    return max(16, 1 << (head_dim - 1).bit_length())


def _strides(x: torch.Tensor) -> tuple[int, int, int, int]:
    """Batch, row, column and head strides of a ``[B, H, W, heads, D]`` tensor."""
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def _shared_layout(q, k, v):
    """q, k, v with one common set of strides and a contiguous last dim."""
    strides = {x.stride() for x in (q, k, v)}
    if len(strides) == 1 and q.stride(-1) == 1:
        return q, k, v
    return q.contiguous(), k.contiguous(), v.contiguous()


def _aligned(*tensors: torch.Tensor) -> bool:
    """Whether every batch and row stride is a multiple of 16 (the specialised kernels)."""
    return all(x.stride(0) % 16 == 0 and x.stride(1) % 16 == 0 for x in tensors)


class _CompileMode:
    """Whether launches only compile (see :func:`compile_only`), and for CPU tensors too."""

    active = False
    cpu_tensors = False


@contextlib.contextmanager
def compile_only(cpu_tensors: bool = False) -> Iterator[None]:
    """Within the block, every launch compiles its kernel but runs nothing.

    Each launch goes through Triton's own JIT (``JITFunction.run`` with ``warmup``):
    the kernel a real launch would pick is compiled into the JIT's cache, or found
    there. Outputs are left unwritten (``torch.empty``). On a GPU this compiles every
    kernel a model needs before timing it; with ``cpu_tensors`` (and a stand-in
    driver that names a GPU target, :mod:`nattk.dev.triton_aot`) it compiles for that
    target on a machine without one.

    Raises:
        RuntimeError: Under Triton's interpreter (it compiles nothing).
    """
    if interpreting():
        raise RuntimeError("compile_only needs compiled kernels: unset TRITON_INTERPRET")
    saved = (_CompileMode.active, _CompileMode.cpu_tensors)
    _CompileMode.active, _CompileMode.cpu_tensors = True, cpu_tensors
    try:
        yield
    finally:
        _CompileMode.active, _CompileMode.cpu_tensors = saved


def jit_variants(device=None) -> dict[str, list]:
    """The compiled variants Triton's JIT holds per kernel (its ``*_unaligned`` twins
    included), for one JIT device key or, with ``None``, every device of this process."""
    kernels = _kernels()
    out = {}
    for name in KERNEL_NAMES:
        for variant in (name, f"{name}_unaligned"):
            caches = getattr(getattr(kernels, variant), "device_caches", {})  # none: interpreter
            keys = list(caches) if device is None else [device] if device in caches else []
            out[variant] = [kernel for key in keys for kernel in caches[key][0].values()]
    return out


def compiled_kernels() -> dict[str, int]:
    """How many variants Triton's JIT holds per kernel, over every device, in this process."""
    return {name: len(variants) for name, variants in jit_variants().items()}


class _Launch:
    """Grid, runtime ints and compile-time constants of one call.

    One program per tile of every dilation group of every (batch, head), on grid axis 0.
    """

    def __init__(self, q: torch.Tensor, kernel, dilation, scale: float, has_rpb: bool) -> None:
        batch, height, width, heads, head_dim = q.shape
        tile = tile_shape(kernel)
        self.tiles = grid_size(height, width, dilation, tile)
        self.grid = (self.tiles * batch * heads,)
        self.runtime = (
            height,
            width,
            dilation[0],
            dilation[1],
            tiles_per_axis(height, dilation[0], tile.rows),
            tiles_per_axis(width, dilation[1], tile.cols),
            self.tiles,
            heads,
            scale,
        )
        self.constants = dict(
            KH=kernel[0],
            KW=kernel[1],
            TH=tile.rows,
            TW=tile.cols,
            BN=tile.block,
            BD=_block_dim(head_dim),
            HEAD_DIM=head_dim,
            HAS_RPB=has_rpb,
            IEEE=q.dtype == torch.float32,
            INTERIOR=interior_path(q.element_size() * 8, _block_dim(head_dim)),
            IP=tile.interior_pitch(kernel),
            IR=tile.interior_block_rows(kernel),
            IB=tile.interior_blocks(kernel),
        )
        self.tile = tile
        self.kernel = tuple(kernel)
        self.element_bits = q.element_size() * 8
        self.device = q.device

    def kernel_constants(self, name: str, **extra) -> dict:
        """Constexprs and launch options of kernel ``name`` for this call."""
        num_warps, num_stages = launch_config(name, self.element_bits, self.constants["BD"])
        return dict(self.constants, **extra, num_warps=num_warps, num_stages=num_stages)

    def __call__(self, name: str, *args, **extra_constants):
        """Launches kernel ``name`` (its ``*_unaligned`` twin when a stride asks for it)."""
        kernel = getattr(_kernels(), name)
        constants = self.kernel_constants(name, **extra_constants)
        if _CompileMode.active:
            kernel.warmup(*args, grid=self.grid, **constants)
        elif self.device.type == "cuda":
            with torch.cuda.device(self.device):
                kernel[self.grid](*args, **constants)
        else:
            kernel[self.grid](*args, **constants)


def _kernel_name(base: str, *tensors: torch.Tensor) -> str:
    return base if _aligned(*tensors) else f"{base}_unaligned"


def _rpb32(rpb: Optional[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    return like if rpb is None else rpb.detach().to(torch.float32).contiguous()


LOG2E = 1.4426950408889634


def interior_pattern(
    rpb: Optional[torch.Tensor], kernel, heads: int, device: torch.device, keys_first: bool
) -> torch.Tensor:
    """What an interior tile adds to each block's log2 scores: ``[heads, IB, 32, BN]`` fp32.

    In the interior every window is unclamped, so the window mask and the bias of a
    (tile point, block slot) pair are the same for every program of a head:
    ``rpb * log2(e)`` inside the window, ``-inf`` outside it (and on padding slots).
    ``keys_first`` gives the dk/dv kernel's transposed pattern (rows are a key tile's
    keys, slots its queries). See :func:`~.triton_tiling.interior_pairs`.
    """
    index, inside = _interior_pairs(tuple(kernel), keys_first, device)
    if rpb is None:
        values = torch.zeros(index.shape, dtype=torch.float32, device=device)
    else:
        values = rpb.detach().to(torch.float32).flatten(1)[:, index] * LOG2E
    values = values.masked_fill(~inside, float("-inf"))
    return values.expand(heads, *index.shape).contiguous()


_PAIRS: dict = {}


def _interior_pairs(kernel, keys_first: bool, device: torch.device):
    """``(bias index, inside)`` of :func:`~.triton_tiling.interior_pairs`, cached per device."""
    key = (kernel, keys_first, str(device))
    if key not in _PAIRS:
        index, inside = interior_pairs(kernel, keys_first)
        _PAIRS[key] = (
            torch.tensor(index, dtype=torch.long, device=device),
            torch.tensor(inside, dtype=torch.bool, device=device),
        )
    return _PAIRS[key]


def attention_forward(q, k, v, rpb, kernel, dilation, scale):
    """Fused forward ``(out, lse, probs)``; ``probs`` is empty (the backward recomputes)."""
    q, k, v = _shared_layout(q, k, v)
    launch = _Launch(q, kernel, dilation, scale, rpb is not None)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
    lse = torch.empty(q.shape[:4], dtype=torch.float32, device=q.device)
    pattern = interior_pattern(rpb, kernel, q.shape[3], q.device, keys_first=False)
    launch(
        _kernel_name(FORWARD_KERNEL, q, out),
        q, k, v, _rpb32(rpb, q), pattern, out, lse,
        *launch.runtime, *_strides(q), *_strides(out),
    )  # fmt: skip
    return out, lse, lse.new_empty(0)


def _check_determinism(rpb_grad: bool) -> None:
    """The bias gradient adds fp32 atomics in whatever order programs finish."""
    if not rpb_grad or not torch.are_deterministic_algorithms_enabled():
        return
    message = (
        "the triton backend's rpb gradient uses atomic adds and is not deterministic; "
        "torch.use_deterministic_algorithms(True) is set: use backend='torch' (or 'cpu'), "
        "freeze the bias (rpb.requires_grad_(False)), or set it with warn_only=True"
    )
    if torch.is_deterministic_algorithms_warn_only_enabled():
        warnings.warn(message, stacklevel=3)
    else:
        raise RuntimeError(message)


def attention_backward(
    grad_out, q, k, v, rpb, out, lse, _probs, kernel, dilation, scale, rpb_grad: bool = True
):
    """``(dq, dk, dv, drpb)`` of :func:`attention_forward`, recomputing the scores.

    ``drpb`` is ``None`` without a bias or when ``rpb_grad`` is false: the dq kernel is
    then compiled without the bias gradient (no gather, no atomics), and the call is
    deterministic.
    """
    rpb_grad = rpb is not None and rpb_grad
    _check_determinism(rpb_grad)
    q, k, v = _shared_layout(q, k, v)
    launch = _Launch(q, kernel, dilation, scale, rpb is not None)
    grad_out, out, lse = grad_out.contiguous(), out.contiguous(), lse.contiguous()
    dq, dk, dv = (torch.empty(q.shape, dtype=q.dtype, device=q.device) for _ in range(3))
    delta = torch.empty_like(lse)
    heads = q.shape[3]
    copies = max(1, min(DRPB_COPIES, launch.tiles)) if rpb_grad else 1
    table = (2 * kernel[0] - 1) * (2 * kernel[1] - 1)
    drpb = torch.zeros(copies, heads, table if rpb_grad else 1, dtype=torch.float32,
                       device=q.device)  # fmt: skip
    rpb32 = _rpb32(rpb, q)
    layout = (*_strides(q), *_strides(out))
    window = kernel[0] * kernel[1]
    launch(
        _kernel_name(BACKWARD_DQ_KERNEL, q, out),
        q, k, v, rpb32, interior_pattern(rpb, kernel, heads, q.device, keys_first=False),
        out, grad_out, lse, delta, dq, drpb,
        *launch.runtime, copies, *layout,
        HAS_DRPB=rpb_grad, KKP=1 << (window - 1).bit_length(),
    )  # fmt: skip
    launch(
        _kernel_name(BACKWARD_DKDV_KERNEL, q, out),
        q, k, v, rpb32, interior_pattern(rpb, kernel, heads, q.device, keys_first=True),
        grad_out, lse, delta, dk, dv,
        *launch.runtime, *layout,
        PITCH=launch.tile.pitch,
    )  # fmt: skip
    drpb = drpb.sum(0).view(rpb.shape).to(rpb.dtype) if rpb_grad else None
    return dq, dk, dv, drpb
