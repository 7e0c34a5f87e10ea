"""Mixed precision: the attention op, layer, backbone and a detector under real autocast.

Nothing here casts an input or a parameter by hand: fp32 modules run inside
``torch.autocast`` exactly as an AMP recipe runs them, and backward runs on the
loss they produce. CPU autocast follows the same rules as CUDA autocast for the
operations involved (Linear/matmul in the low dtype, our operators cast q/k/v).
"""

from __future__ import annotations

import pytest
import torch

from nattk.backbones import DiNAT
from nattk.backbones.attention import (
    NeighborhoodAttention2D,
    na2d_av,
    na2d_qk,
    neighborhood_attention_2d,
)

LOW = [torch.bfloat16, torch.float16]
# Relative error of a half-precision forward against fp32 (bf16 has 8 mantissa bits).
REL_TOL = {torch.bfloat16: 4e-2, torch.float16: 6e-3}


def _rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).abs().max() / expected.abs().max()).item()


def _finite_grads(module: torch.nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.requires_grad]
    return all(g is not None and bool(torch.isfinite(g).all()) for g in grads)


def _layer(kernel=5, dilation=2, attn_drop=0.0):
    torch.manual_seed(0)
    layer = NeighborhoodAttention2D(32, 2, kernel, dilation=dilation, attn_drop=attn_drop)
    torch.nn.init.normal_(layer.rpb, std=0.5)
    return layer


# --------------------------------------------------------------------------- layer
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("size", [(13, 17), (6, 9)], ids=["map", "padded-small-map"])
def test_layer_forward_backward_under_autocast(dtype, size):
    layer = _layer()
    x = torch.randn(2, *size, 32)
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
    assert out.dtype == dtype
    assert _rel_err(out, expected) < REL_TOL[dtype]
    out.float().square().mean().backward()
    assert _finite_grads(layer)
    assert layer.rpb.grad.dtype == torch.float32 and layer.rpb.grad.abs().sum() > 0

    # The gradients are those of fp32 training, to half precision.
    reference = _layer()
    reference(x).square().mean().backward()
    for (name, p), q in zip(layer.named_parameters(), reference.parameters()):
        assert _rel_err(p.grad, q.grad) < 10 * REL_TOL[dtype], name


@pytest.mark.parametrize("dtype", LOW)
def test_unfused_dropout_path_and_weights_under_autocast(dtype):
    layer = _layer(attn_drop=1e-6).train()  # attention dropout takes QK, softmax, AV apart
    x = torch.randn(1, 12, 12, 32)
    expected = layer(x)
    with torch.autocast("cpu", dtype=dtype):
        out = layer(x)
        weights = layer.attention_weights(x)
    assert out.dtype == dtype and _rel_err(out, expected) < REL_TOL[dtype]
    assert torch.allclose(weights.float().sum(-1), torch.ones(1, 12, 12, 2), atol=1e-2)
    out.float().sum().backward()
    assert _finite_grads(layer) and layer.rpb.grad.dtype == torch.float32


# --------------------------------------------------------------------------- operators
def _qkv(dtype=torch.float32, shape=(1, 10, 9, 2, 16), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(3)]


@pytest.mark.parametrize("dtype", LOW)
def test_av_takes_fp32_softmax_and_half_values(dtype):
    """CUDA autocast runs softmax in fp32 while v stays half: AV must take both."""
    q, k, v = _qkv()
    rpb = torch.randn(2, 5, 5)
    v_half = v.to(dtype).requires_grad_(True)  # what a half-precision qkv Linear yields
    logits = na2d_qk(q, k, 3, (2, 3), rpb).requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype):
        attn = logits.softmax(-1)  # fp32, like CUDA autocast's softmax
        assert attn.dtype == torch.float32
        out = na2d_av(attn, v_half, 3, (2, 3))
    assert out.dtype == dtype
    expected = na2d_av(logits.softmax(-1), v, 3, (2, 3))
    assert _rel_err(out, expected) < REL_TOL[dtype]
    out.float().sum().backward()
    assert v_half.grad.dtype == dtype and logits.grad.dtype == torch.float32
    assert torch.isfinite(v_half.grad).all() and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("op", ["fused", "qk"])
def test_fp32_bias_with_half_queries_gets_fp32_gradients(op):
    """rpb is cast at the call; its gradient is accumulated and returned in fp32."""
    q, k, v = _qkv(torch.float64)
    rpb = torch.randn(2, 5, 5, dtype=torch.float64)

    def run(q, k, v, rpb):
        if op == "fused":
            return neighborhood_attention_2d(q, k, v, 3, (2, 3), rpb)
        return na2d_qk(q, k, 3, (2, 3), rpb)

    rpb64 = rpb.clone().requires_grad_(True)
    run(q, k, v, rpb64).sum().backward()
    rpb32 = rpb.float().requires_grad_(True)
    out = run(*(t.bfloat16() for t in (q, k, v)), rpb32)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert rpb32.grad.dtype == torch.float32
    assert _rel_err(rpb32.grad, rpb64.grad) < 3e-2


@pytest.mark.parametrize("dtype", LOW)
def test_operators_cast_q_k_v_to_the_autocast_dtype(dtype):
    q, k, v = _qkv()
    with torch.autocast("cpu", dtype=dtype):
        out = neighborhood_attention_2d(q, k, v, 3, 1, torch.zeros(2, 5, 5))
        mixed = neighborhood_attention_2d(q.to(dtype), k, v, 3, 1)  # autocast reconciles dtypes
    assert out.dtype == mixed.dtype == dtype
    with pytest.raises(ValueError, match="run under torch.autocast"):
        neighborhood_attention_2d(q.to(dtype), k, v, 3, 1)  # outside autocast: a clear error


def test_scores_and_softmax_are_computed_in_fp32():
    """Bias differences that fp16 cannot hold at the bias' magnitude still shape the weights.

    Around 1000, fp16 values are 0.5 apart: logits rounded to fp16 before the softmax
    would move each weight by up to exp(0.25), about 28%.
    """
    q, k, v = _qkv(torch.float16)
    gen = torch.Generator().manual_seed(1)
    rpb = 1000 + 2 * torch.rand(2, 5, 5, generator=gen)  # an fp32 parameter
    out = neighborhood_attention_2d(q, k, v, 3, 1, rpb)
    expected = neighborhood_attention_2d(q.double(), k.double(), v.double(), 3, 1, rpb.double())
    assert out.dtype == torch.float16
    assert _rel_err(out, expected) < 1e-2


# --------------------------------------------------------------------------- backbone
def tiny_dinat(**kwargs) -> DiNAT:
    torch.manual_seed(0)
    args = dict(
        embed_dim=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 4, 8],
        kernel_size=3,
        dilations=[[1, 4], [1, 3], [1, 2], [1, 1]],
        drop_path_rate=0.0,
    )
    args.update(kwargs)
    return DiNAT(**args)


@pytest.mark.parametrize("dtype", LOW)
def test_dense_backbone_forward_backward_under_autocast(dtype):
    """DiNAT with dilations and small-map padding (levels 1-2 pad at this size)."""
    model = tiny_dinat()
    x = torch.randn(2, 3, 64, 96)
    expected = model(x)
    with torch.autocast("cpu", dtype=dtype):
        features = model(x)
        loss = sum(f.float().square().mean() for f in features)
    for f, e in zip(features, expected):
        assert f.shape == e.shape and _rel_err(f, e) < 2 * REL_TOL[dtype]
    loss.backward()
    assert _finite_grads(model)
    rpbs = [m.rpb for m in model.modules() if isinstance(m, NeighborhoodAttention2D)]
    assert all(r.dtype == r.grad.dtype == torch.float32 for r in rpbs)


# --------------------------------------------------------------------------- detector
@pytest.fixture(scope="module")
def toy_coco(tmp_path_factory):
    from nattk.quickstart.toy_data import make_toy_coco

    return make_toy_coco(tmp_path_factory.mktemp("toy_coco"), num_train=4, num_val=2)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", LOW)
def test_mask_rcnn_dinat_trains_under_autocast(dtype, toy_coco, tmp_path):
    """A reduced DiNAT Mask R-CNN: one real optimizer step with the forward under autocast.

    This is what ``AmpOptimWrapper`` does on a GPU (autocast around the forward,
    backward and step outside). mmcv's CPU NMS/RoIAlign kernels refuse half
    precision where their CUDA kernels accept it; :func:`mmcv_cpu_ops_take_half`
    gives them the CUDA kernels' dtype behaviour. Everything else is as on a GPU.
    """
    pytest.importorskip("mmdet")
    from mm_helpers import REPO, mmcv_cpu_ops_take_half, reduced_detection_config
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    import nattk.detection  # noqa: F401

    config = REPO / "configs/mmdet/dinat/mask-rcnn_dinat-t_fpn_amp-ms-crop-3x_coco.py"
    cfg = Config.fromfile(reduced_detection_config(config, toy_coco, tmp_path / "reduced.py"))
    init_default_scope("mmdet")
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    batch = next(iter(Runner.build_dataloader(cfg.train_dataloader)))
    data = model.data_preprocessor(batch, True)
    model.eval()  # stochastic depth off for the comparison of features
    with torch.no_grad():
        expected = model.extract_feat(data["inputs"])
        with torch.autocast("cpu", dtype=dtype):
            features = model.extract_feat(data["inputs"])
    model.train()

    rpbs = [m.rpb for m in model.backbone.modules() if isinstance(m, NeighborhoodAttention2D)]
    before = [r.detach().clone() for r in rpbs]
    with mmcv_cpu_ops_take_half():
        with torch.autocast("cpu", dtype=dtype):
            losses = model(**data, mode="loss")
        loss, _ = model.parse_losses(losses)
        optim_wrapper.backward(loss)
    for f, e in zip(features, expected):
        assert f.dtype == dtype and _rel_err(f, e) < 2 * REL_TOL[dtype]
    assert torch.isfinite(loss)
    assert _finite_grads(model.backbone)
    assert all(r.grad.dtype == torch.float32 and r.grad.abs().sum() > 0 for r in rpbs)
    optim_wrapper.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(not torch.equal(r, b) for r, b in zip(rpbs, before))
