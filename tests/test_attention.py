"""Neighborhood attention: exact semantics of every backend against a naive reference."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nattk.backbones.attention import (
    NeighborhoodAttention2D,
    cpu_extension,
    flex_backend,
    na2d_av,
    na2d_qk,
    neighborhood_attention_2d,
)

HAS_CPU_EXT = cpu_extension.load() is not None
CPU_BACKENDS = ["torch"] + (["cpu"] if HAS_CPU_EXT else [])


# --------------------------------------------------------------------------- reference
def naive_window(i: int, length: int, kernel: int, dilation: int) -> list[int]:
    """Keys of query i along one axis, written directly from the per-axis formula."""
    r, g = i % dilation, i // dilation
    group_len = math.ceil((length - r) / dilation)
    s = min(max(g - kernel // 2, 0), group_len - kernel)
    return [(s + t) * dilation + r for t in range(kernel)]


def naive_na2d(q, k, v, kernel, dilation, rpb=None, scale=None):
    """Loops over every query; tiny maps only."""
    batch, height, width, heads, dim = q.shape
    scale = dim**-0.5 if scale is None else scale
    out = torch.zeros_like(q)
    for i in range(height):
        rows = naive_window(i, height, kernel[0], dilation[0])
        for j in range(width):
            cols = naive_window(j, width, kernel[1], dilation[1])
            keys = k[:, rows][:, :, cols].reshape(batch, -1, heads, dim)
            vals = v[:, rows][:, :, cols].reshape(batch, -1, heads, dim)
            logits = torch.einsum("bhd,bnhd->bhn", q[:, i, j] * scale, keys)
            if rpb is not None:
                bias_r = [kernel[0] - 1 + (a - i) // dilation[0] for a in rows]
                bias_c = [kernel[1] - 1 + (c - j) // dilation[1] for c in cols]
                logits = logits + rpb[:, bias_r][:, :, bias_c].reshape(heads, -1)
            out[:, i, j] = torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), vals)
    return out


def _random_case(rng: random.Random):
    kernel = (rng.choice([1, 3, 5]), rng.choice([1, 3, 5, 7]))
    dilation = (rng.randint(1, 3), rng.randint(1, 3))
    height = kernel[0] * dilation[0] + rng.randint(0, 4)
    width = kernel[1] * dilation[1] + rng.randint(0, 4)
    return dict(
        batch=rng.randint(1, 2),
        heads=rng.randint(1, 3),
        dim=rng.choice([2, 4, 5]),
        height=height,
        width=width,
        kernel=kernel,
        dilation=dilation,
        rpb=rng.random() < 0.7,
    )


def _tensors(case, dtype=torch.float64, seed=0, requires_grad=False):
    gen = torch.Generator().manual_seed(seed)
    shape = (case["batch"], case["height"], case["width"], case["heads"], case["dim"])
    q, k, v = (torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3))
    rpb = None
    if case["rpb"]:
        kr, kc = case["kernel"]
        rpb = torch.randn(case["heads"], 2 * kr - 1, 2 * kc - 1, generator=gen, dtype=dtype)
    tensors = [q, k, v, rpb]
    if requires_grad:
        for t in tensors:
            if t is not None:
                t.requires_grad_(True)
    return tensors


RANDOM_CASES = [_random_case(random.Random(seed)) for seed in range(40)]
FIXED_CASES = [
    # square, exactly kernel x dilation, non-divisible lengths, per-axis settings
    dict(batch=2, heads=2, dim=4, height=7, width=7, kernel=(7, 7), dilation=(1, 1), rpb=True),
    dict(batch=1, heads=2, dim=3, height=9, width=6, kernel=(3, 3), dilation=(3, 2), rpb=True),
    dict(batch=1, heads=1, dim=4, height=11, width=13, kernel=(3, 5), dilation=(2, 2), rpb=True),
    dict(batch=2, heads=3, dim=2, height=10, width=8, kernel=(5, 3), dilation=(2, 1), rpb=False),
    dict(batch=1, heads=2, dim=4, height=12, width=12, kernel=(3, 3), dilation=(4, 4), rpb=True),
]


# --------------------------------------------------------------------------- semantics
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", FIXED_CASES + RANDOM_CASES)
def test_matches_naive_reference_fp64(case, backend):
    q, k, v, rpb = _tensors(case)
    expected = naive_na2d(q, k, v, case["kernel"], case["dilation"], rpb)
    out = neighborhood_attention_2d(q, k, v, case["kernel"], case["dilation"], rpb, backend=backend)
    assert out.shape == q.shape
    assert torch.allclose(out, expected, atol=1e-10, rtol=0), (out - expected).abs().max()


def test_custom_scale_is_applied_to_q():
    case = FIXED_CASES[1]
    q, k, v, rpb = _tensors(case)
    expected = naive_na2d(q, k, v, case["kernel"], case["dilation"], rpb, scale=0.37)
    for backend in CPU_BACKENDS:
        out = neighborhood_attention_2d(
            q, k, v, case["kernel"], case["dilation"], rpb, 0.37, backend
        )
        assert torch.allclose(out, expected, atol=1e-10, rtol=0)


# gradcheck of the three largest cases takes seconds per backend: slow tier only.
GRADCHECK_CASES = [
    FIXED_CASES[1],
    *(pytest.param(c, marks=pytest.mark.slow) for c in FIXED_CASES[2:4] + RANDOM_CASES[:1]),
    *RANDOM_CASES[1:4],
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradcheck(case, backend):
    small = dict(case, batch=1, heads=min(case["heads"], 2), dim=2)
    q, k, v, rpb = _tensors(small, requires_grad=True)
    inputs = [t for t in (q, k, v, rpb) if t is not None]

    def fn(*args):
        q_, k_, v_ = args[:3]
        rpb_ = args[3] if rpb is not None else None
        return neighborhood_attention_2d(
            q_, k_, v_, small["kernel"], small["dilation"], rpb_, backend=backend
        )

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7)


@pytest.mark.skipif(not HAS_CPU_EXT, reason="C++ CPU extension not built")
def test_cpu_and_torch_backends_agree_on_gradients_fp32():
    case = dict(
        batch=2, heads=2, dim=32, height=23, width=25, kernel=(7, 7), dilation=(2, 3), rpb=True
    )
    grads = {}
    for backend in ("torch", "cpu"):
        q, k, v, rpb = _tensors(case, dtype=torch.float32, seed=3, requires_grad=True)
        out = neighborhood_attention_2d(q, k, v, 7, (2, 3), rpb, backend=backend)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads[backend] = [out.detach()] + [t.grad for t in (q, k, v, rpb)]
    for a, b in zip(grads["torch"], grads["cpu"]):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)


# Cases a re-layout bug would catch: q/k/v as views of one qkv tensor (what the module
# makes), odd map sizes with dilation 8 (ragged groups), 1 x 1 windows.
RELAYOUT_CASES = [
    dict(batch=2, heads=2, dim=8, height=13, width=11, kernel=(3, 3), dilation=(2, 3), rpb=True),
    dict(batch=1, heads=2, dim=4, height=59, width=61, kernel=(7, 7), dilation=(8, 8), rpb=True),
    dict(batch=1, heads=1, dim=4, height=25, width=27, kernel=(3, 3), dilation=(8, 8), rpb=True),
    dict(batch=2, heads=3, dim=4, height=5, width=6, kernel=(1, 1), dilation=(1, 1), rpb=True),
    dict(batch=1, heads=2, dim=4, height=9, width=10, kernel=(1, 3), dilation=(1, 3), rpb=False),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("case", RELAYOUT_CASES, ids=lambda c: f"{c['height']}x{c['width']}"
                         f"k{c['kernel']}d{c['dilation']}")  # fmt: skip
def test_qkv_views_odd_maps_and_one_by_one_windows_fp64(case, backend):
    """Forward against the naive loop; all four gradients against the ``torch`` backend
    on contiguous copies, from q/k/v that are strided views of one qkv tensor."""
    gen = torch.Generator().manual_seed(1)
    shape = (case["batch"], case["height"], case["width"], 3, case["heads"], case["dim"])
    qkv = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
    q, k, v = qkv.unbind(3)
    assert not q.is_contiguous()
    kr, kc = case["kernel"]
    rpb = torch.randn(case["heads"], 2 * kr - 1, 2 * kc - 1, generator=gen, dtype=torch.float64)
    rpb = rpb.requires_grad_(True) if case["rpb"] else None
    kernel, dilation = case["kernel"], case["dilation"]
    out = neighborhood_attention_2d(q, k, v, kernel, dilation, rpb, backend=backend)
    expected = naive_na2d(q.detach(), k.detach(), v.detach(), kernel, dilation,
                          None if rpb is None else rpb.detach())  # fmt: skip
    assert torch.allclose(out, expected, atol=1e-10, rtol=0), (out - expected).abs().max()
    grad = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    leaves = [qkv] + ([rpb] if rpb is not None else [])
    got = torch.autograd.grad(out, leaves, grad)
    copies = [t.detach().contiguous().requires_grad_(True) for t in (q, k, v)]
    rpb_copy = None if rpb is None else rpb.detach().clone().requires_grad_(True)
    ref_out = neighborhood_attention_2d(*copies, kernel, dilation, rpb_copy, backend="torch")
    ref = torch.autograd.grad(ref_out, copies + ([rpb_copy] if rpb is not None else []), grad)
    assert torch.allclose(got[0], torch.stack(ref[:3], dim=3), atol=1e-10, rtol=0)
    if rpb is not None:
        assert torch.allclose(got[1], ref[3], atol=1e-10, rtol=0)


# fp32 with head dims the C++ kernels specialise (vector paths for multiples of 16):
# windows of 1, 9, 25, 49 and 121 keys cover the batches of 16 dot products, the
# masked tail and the scalar tail; 24 takes the portable path.
VECTOR_CASES = [
    dict(dim=16, kernel=(1, 1), dilation=(1, 1), height=5, width=6),
    dict(dim=32, kernel=(3, 3), dilation=(2, 1), height=9, width=7),
    dict(dim=48, kernel=(5, 5), dilation=(1, 2), height=8, width=13),
    dict(dim=64, kernel=(7, 7), dilation=(2, 2), height=17, width=15),
    dict(dim=32, kernel=(11, 11), dilation=(1, 1), height=13, width=14),
    dict(dim=24, kernel=(7, 7), dilation=(1, 3), height=9, width=23),
]


@pytest.mark.skipif(not HAS_CPU_EXT, reason="C++ CPU extension not built")
@pytest.mark.parametrize("case", VECTOR_CASES, ids=lambda c: f"D{c['dim']}k{c['kernel'][0]}")
def test_cpu_fp32_head_dim_paths_match_fp64_on_qkv_views(case):
    gen = torch.Generator().manual_seed(5)
    shape = (2, case["height"], case["width"], 3, 2, case["dim"])
    qkv = torch.randn(shape, generator=gen, dtype=torch.float64)
    kr, kc = case["kernel"]
    rpb = torch.randn(2, 2 * kr - 1, 2 * kc - 1, generator=gen, dtype=torch.float64)
    grad = torch.randn(shape[:3] + shape[4:], generator=gen, dtype=torch.float64)
    results = {}
    for dtype, backend in ((torch.float64, "torch"), (torch.float32, "cpu")):
        leaf = qkv.to(dtype, copy=True).requires_grad_(True)
        bias = rpb.to(dtype, copy=True).requires_grad_(True)
        out = neighborhood_attention_2d(*leaf.unbind(3), case["kernel"], case["dilation"], bias,
                                        backend=backend)  # fmt: skip
        out.backward(grad.to(dtype))
        results[dtype] = (out.detach(), leaf.grad, bias.grad)
    for got, expected in zip(results[torch.float32], results[torch.float64]):
        assert torch.allclose(got.double(), expected, atol=2e-5, rtol=1e-4), (
            (got.double() - expected).abs().max()
        )


# Maps large enough (>= 512 KiB per tensor and image) that the C++ kernels copy each
# dilation group into a per-thread buffer: ragged groups, asymmetric dilation, qkv views.
PACKED_GROUP_CASES = [
    dict(height=45, width=38, kernel=(5, 5), dilation=(4, 3)),
    dict(height=59, width=61, kernel=(7, 7), dilation=(8, 8)),
    dict(height=40, width=44, kernel=(3, 7), dilation=(1, 5)),
]


@pytest.mark.skipif(not HAS_CPU_EXT, reason="C++ CPU extension not built")
@pytest.mark.parametrize("case", PACKED_GROUP_CASES, ids=lambda c: f"d{c['dilation']}")
def test_cpu_packed_dilation_groups_match_the_torch_backend_fp64(case):
    gen = torch.Generator().manual_seed(7)
    shape = (2, case["height"], case["width"], 3, 2, 32)
    assert case["height"] * case["width"] * 2 * 32 * 8 >= 512 * 1024
    qkv = torch.randn(shape, generator=gen, dtype=torch.float64)
    kr, kc = case["kernel"]
    rpb = torch.randn(2, 2 * kr - 1, 2 * kc - 1, generator=gen, dtype=torch.float64)
    grad = torch.randn(shape[:3] + shape[4:], generator=gen, dtype=torch.float64)
    results = []
    for backend in ("torch", "cpu"):
        leaf, bias = qkv.clone().requires_grad_(True), rpb.clone().requires_grad_(True)
        out = neighborhood_attention_2d(*leaf.unbind(3), case["kernel"], case["dilation"], bias,
                                        backend=backend)  # fmt: skip
        out.backward(grad)
        results.append((out.detach(), leaf.grad, bias.grad))
    for expected, got in zip(*results):
        assert torch.allclose(got, expected, atol=1e-10, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_backend_low_precision_close_to_fp64(dtype):
    case = FIXED_CASES[2]
    q, k, v, rpb = _tensors(case)
    expected = naive_na2d(q, k, v, case["kernel"], case["dilation"], rpb)
    args = [t.to(dtype) for t in (q, k, v, rpb)]
    out = neighborhood_attention_2d(*args[:3], case["kernel"], case["dilation"], args[3])
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    assert out.dtype == dtype
    assert torch.allclose(out.double(), expected, atol=tol, rtol=tol)


def test_unfused_ops_compose_to_full_op():
    case = FIXED_CASES[1]
    q, k, v, rpb = _tensors(case)
    for backend in CPU_BACKENDS:
        logits = na2d_qk(q, k, case["kernel"], case["dilation"], rpb, backend=backend)
        assert logits.shape == (*q.shape[:4], math.prod(case["kernel"]))
        out = na2d_av(logits.softmax(-1), v, case["kernel"], case["dilation"], backend=backend)
        expected = naive_na2d(q, k, v, case["kernel"], case["dilation"], rpb)
        assert torch.allclose(out, expected, atol=1e-10, rtol=0)


def test_torch_backend_does_not_keep_gathered_keys_for_backward():
    """Saved activations stay O(N * (D + K)), not O(N * K * D)."""
    shape = (1, 40, 40, 2, 32)
    q, k, v = (torch.randn(shape, requires_grad=True) for _ in range(3))
    rpb = torch.zeros(2, 13, 13, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        neighborhood_attention_2d(q, k, v, 7, 1, rpb, backend="torch").sum().backward()
    gathered = q.numel() * 49 * q.element_size()
    assert sum(saved) < gathered / 4, (sum(saved), gathered)


# --------------------------------------------------------------------------- NATTEN / flex
@pytest.mark.slow
def test_agrees_with_natten_na2d_on_cpu():
    natten = pytest.importorskip("natten", reason="natten not installed")
    for case in FIXED_CASES:
        case = dict(case, dim=8, rpb=False)
        q, k, v, _ = _tensors(case, dtype=torch.float32)
        expected = natten.na2d(q, k, v, kernel_size=case["kernel"], dilation=case["dilation"])
        for backend in CPU_BACKENDS:
            out = neighborhood_attention_2d(
                q, k, v, case["kernel"], case["dilation"], backend=backend
            )
            assert torch.allclose(out, expected, atol=2e-5), (backend, case)


@pytest.mark.skipif(flex_backend.flex_attention is None, reason="torch has no flex_attention")
@pytest.mark.parametrize("case", FIXED_CASES)
def test_flex_mask_and_bias_semantics_eager_cpu(case):
    """The flex backend's mask_mod/score_mod, run eagerly on CPU (forward only)."""
    q, k, v, rpb = _tensors(dict(case, dim=8), dtype=torch.float32)
    expected = naive_na2d(
        q.double(),
        k.double(),
        v.double(),
        case["kernel"],
        case["dilation"],
        None if rpb is None else rpb.double(),
    )
    with torch.no_grad():
        out = flex_backend.attention(
            q, k, v, case["kernel"], case["dilation"], rpb, 8**-0.5, compiled=False
        )
    assert torch.allclose(out.double(), expected, atol=1e-5)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["flex", "natten", "torch"])
def test_gpu_backends_match_reference(backend):
    case = dict(
        batch=2,
        heads=2,
        dim=32,
        height=29,
        width=33,
        kernel=(7, 7),
        dilation=(2, 3),
        rpb=backend != "natten",
    )
    if backend == "natten":
        pytest.importorskip("natten")
    q, k, v, rpb = _tensors(case, dtype=torch.float32, requires_grad=True)
    ref = neighborhood_attention_2d(q, k, v, 7, (2, 3), rpb, backend="torch")
    ref_grads = torch.autograd.grad(
        ref.square().sum(), [t for t in (q, k, v, rpb) if t is not None]
    )
    dev = [None if t is None else t.detach().cuda().requires_grad_(True) for t in (q, k, v, rpb)]
    out = neighborhood_attention_2d(*dev[:3], 7, (2, 3), dev[3], backend=backend)
    grads = torch.autograd.grad(out.square().sum(), [t for t in dev if t is not None])
    assert torch.allclose(out.cpu(), ref, atol=1e-4)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a.cpu(), b, atol=1e-4)


# --------------------------------------------------------------------------- module
def test_module_parameter_names_and_rpb_init():
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(64, 4, 7, dilation=2)
    assert [n for n, _ in layer.named_parameters()] == [
        "rpb",
        "qkv.weight",
        "qkv.bias",
        "proj.weight",
        "proj.bias",
    ]
    assert layer.rpb.shape == (4, 13, 13)
    assert 0.015 < layer.rpb.std().item() < 0.025 and layer.rpb.abs().max() <= 2.0
    no_bias = NeighborhoodAttention2D(64, 4, 7, rel_pos_bias=False)
    assert "rpb" not in dict(no_bias.named_parameters())


@pytest.mark.parametrize(
    "size,dilation", [((5, 9), 1), ((12, 30), 3), ((3, 3), 2), ((20, 10), (1, 2))]
)
def test_module_pads_small_maps_like_natten_014(size, dilation):
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(16, 2, 5, dilation=dilation).double().eval()
    d = dilation if isinstance(dilation, tuple) else (dilation, dilation)
    x = torch.randn(2, *size, 16, dtype=torch.float64)
    out = layer(x)
    assert out.shape == x.shape
    # Reference: zero-pad the *input* to kernel*dilation, run the unpadded op, crop.
    pad_h, pad_w = max(0, 5 * d[0] - size[0]), max(0, 5 * d[1] - size[1])
    xp = torch.nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    qkv = layer.qkv(xp).reshape(*xp.shape[:3], 3, 2, 8)
    ref = naive_na2d(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :], (5, 5), d, layer.rpb)
    ref = layer.proj(ref.reshape(*xp.shape[:3], 16)[:, : size[0], : size[1]])
    assert torch.allclose(out, ref, atol=1e-10)


def test_module_attention_dropout_uses_unfused_path():
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(16, 2, 3, attn_drop=0.5)
    x = torch.randn(1, 6, 6, 16)
    layer.train()
    a, b = layer(x), layer(x)
    assert not torch.allclose(a, b)  # dropout active
    layer.eval()
    assert torch.allclose(layer(x), layer(x))
    weights = layer.attention_weights(x)
    assert weights.shape == (1, 6, 6, 2, 9)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 6, 6, 2))


# --------------------------------------------------------------------------- errors
def _qkv(shape=(1, 8, 8, 2, 4)):
    return [torch.randn(shape) for _ in range(3)]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(kernel_size=4, rpb=torch.zeros(2, 7, 7)), "odd kernel_size"),
        (dict(kernel_size=3, rpb=torch.zeros(2, 3, 3)), r"rpb must have shape"),
        (dict(kernel_size=3, dilation=3), "larger than the feature map"),
        (dict(kernel_size=0), "kernel_size must be positive"),
        (dict(kernel_size=3, dilation=(1, -1)), "dilation must be positive"),
        (dict(kernel_size=(3, 3, 3)), "kernel_size must be an int or a pair"),
        (dict(kernel_size=3, backend="cuda"), "backend must be one of"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=match):
        neighborhood_attention_2d(q, k, v, **kwargs)


def test_bad_layouts_raise_value_error():
    q, k, v = _qkv()
    with pytest.raises(
        ValueError, match=r"q must be laid out \[batch, height, width, heads, head_dim\]"
    ):
        neighborhood_attention_2d(q[0], k, v, 3)
    with pytest.raises(ValueError, match="same shape"):
        neighborhood_attention_2d(q, k[:, :, :7], v, 3)
    with pytest.raises(ValueError, match="k is torch.float64"):
        neighborhood_attention_2d(q, k.double(), v, 3)
    with pytest.raises(ValueError, match=r"expected a \[B, H, W, C\] input"):
        NeighborhoodAttention2D(8, 2, 3)(torch.randn(1, 8, 5, 5, 8))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        NeighborhoodAttention2D(10, 3, 3)


def test_forced_backend_that_cannot_serve_raises():
    q, k, v = _qkv()
    with pytest.raises(RuntimeError, match="'flex' cannot run this call"):
        neighborhood_attention_2d(q, k, v, 3, backend="flex")
    with pytest.raises(RuntimeError, match="'natten' cannot run this call"):
        neighborhood_attention_2d(q, k, v, 3, rpb=torch.zeros(2, 5, 5), backend="natten")


def test_environment_variable_selects_backend(monkeypatch):
    q, k, v = _qkv()
    monkeypatch.setenv("NATTK_NA_BACKEND", "flex")
    with pytest.raises(RuntimeError, match="'flex'"):
        neighborhood_attention_2d(q, k, v, 3)
    monkeypatch.setenv("NATTK_NA_BACKEND", "torch")
    out = neighborhood_attention_2d(q, k, v, 3)
    assert out.shape == q.shape


def test_auto_uses_cpu_kernels_for_fp32_and_torch_for_bf16():
    from nattk.backbones.attention import resolve_backend

    q = torch.randn(1, 8, 8, 2, 4)
    assert resolve_backend("auto", q, None) == ("cpu" if HAS_CPU_EXT else "torch")
    assert resolve_backend("auto", q.bfloat16(), None) == "torch"


def test_without_cpu_extension_auto_falls_back_to_torch_and_says_why(tmp_path):
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from nattk.backbones.attention import backend_report, neighborhood_attention_2d, resolve_backend\n"
        "q = torch.randn(1, 8, 8, 2, 4)\n"
        "print(resolve_backend('auto', q, None))\n"
        "print(backend_report()['cpu'])\n"
        "print(neighborhood_attention_2d(q, q, q, 3).shape)\n"
    )
    env = dict(os.environ, NATTK_CPU_EXTENSION="0")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "torch"
    assert "disabled by NATTK_CPU_EXTENSION=0" in lines[1]
    assert lines[2] == "torch.Size([1, 8, 8, 2, 4])"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_inference_fast_path_equals_the_operator(backend, monkeypatch):
    """Under no_grad (no autocast, compile or tracing) the call skips the operator's
    dispatch and runs the same implementation: identical output; otherwise the op runs."""
    case = FIXED_CASES[1]
    q, k, v, rpb = _tensors(case, dtype=torch.float32)
    with_op = neighborhood_attention_2d(
        q, k, v, case["kernel"], case["dilation"], rpb, backend=backend
    )
    calls = []
    original = torch.ops.nattk.na2d

    class Spy:
        def __call__(self, *args):
            calls.append(args)
            return original(*args)

    monkeypatch.setattr(torch.ops.nattk, "na2d", Spy())
    with torch.no_grad():
        fast = neighborhood_attention_2d(
            q, k, v, case["kernel"], case["dilation"], rpb, backend=backend
        )
    assert not calls and torch.equal(fast, with_op)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        neighborhood_attention_2d(q, k, v, case["kernel"], case["dilation"], rpb, backend="torch")
    assert len(calls) == 1  # autocast: the operator and its autocast rule
