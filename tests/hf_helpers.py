"""Hugging Face's own NAT/DiNAT classes (transformers 4.46.3), runnable without NATTEN 0.17.

transformers' ``modeling_nat``/``modeling_dinat`` compute attention with NATTEN <= 0.17's
``natten2dqkrpb(query, key, rpb, kernel_size, dilation)`` and
``natten2dav(attn, value, kernel_size, dilation)`` on ``[B, heads, H, W, D]`` tensors,
and import them at module import when any NATTEN is installed (0.21 no longer has
them). :func:`hf_classes` imports the modules with transformers' NATTEN stand-ins, then
substitutes this toolkit's ``na2d_qk``/``na2d_av`` (``[B, H, W, heads, D]``) for them, so
HF's model runs its own code around the same attention primitive as ours.
"""

from __future__ import annotations

import functools
import importlib
from types import SimpleNamespace

import torch

from nattk.backbones.attention import na2d_av, na2d_qk
from nattk.backbones.nat import NAT, DiNAT

try:
    import transformers  # noqa: F401
except ImportError:  # pragma: no cover - the dev extra installs it
    HAVE_TRANSFORMERS = False
else:
    HAVE_TRANSFORMERS = True
SKIP_REASON = "transformers (dev extra, transformers==4.46.3) is not installed"

_MODULES = {
    "nat": ("transformers.models.deprecated.nat.modeling_nat", "Nat"),
    "dinat": ("transformers.models.dinat.modeling_dinat", "Dinat"),
}
#: A small NAT/DiNAT whose maps at 96x128 input (24x32 ... 3x4) need no padding.
SMALL = dict(embed_dim=16, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4], kernel_size=3)
SMALL_DILATIONS = [[1], [1, 2], [1, 2], [1]]
SMALL_MLP_RATIO = 2.0
INPUT_SHAPE = (2, 3, 96, 128)


def _to_ours(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1, 4)


def _to_hf(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2, 4)


def hf_qkrpb(query, key, rpb, kernel_size, dilation):
    """NATTEN 0.17's ``natten2dqkrpb`` (query already scaled by HF) on our operator."""
    return _to_hf(na2d_qk(_to_ours(query), _to_ours(key), kernel_size, dilation, rpb, 1.0))


def hf_av(attn, value, kernel_size, dilation):
    """NATTEN 0.17's ``natten2dav`` on our operator."""
    return _to_hf(na2d_av(_to_ours(attn), _to_ours(value), kernel_size, dilation))


@functools.cache
def _import(family: str):
    from transformers.utils import import_utils

    saved = import_utils._natten_available
    import_utils._natten_available = False  # take transformers' stand-ins at import
    try:
        return importlib.import_module(_MODULES[family][0])
    finally:
        import_utils._natten_available = saved


def hf_classes(family: str, monkeypatch) -> SimpleNamespace:
    """``Model``, ``ForImageClassification``, ``Backbone`` and ``Config`` of ``family``.

    Within the test (``monkeypatch``), the module's NATTEN functions are ours and its
    ``requires_backends`` check, which only asks whether NATTEN is installed, passes.
    """
    module = _import(family)
    monkeypatch.setattr(module, "natten2dqkrpb", hf_qkrpb)
    monkeypatch.setattr(module, "natten2dav", hf_av)
    monkeypatch.setattr(module, "requires_backends", lambda *args, **kwargs: None)
    prefix = _MODULES[family][1]
    return SimpleNamespace(
        Model=getattr(module, f"{prefix}Model"),
        ForImageClassification=getattr(module, f"{prefix}ForImageClassification"),
        Backbone=getattr(module, f"{prefix}Backbone"),
        Config=getattr(module, f"{prefix}Config"),
    )


def small_config(classes: SimpleNamespace, family: str, layer_scale, **extra):
    """HF config of the :data:`SMALL` model (``layer_scale`` ``None`` means off)."""
    options = dict(SMALL, mlp_ratio=SMALL_MLP_RATIO, drop_path_rate=0.0, **extra)
    options["layer_scale_init_value"] = layer_scale or 0.0
    if family == "dinat":
        options["dilations"] = SMALL_DILATIONS
    return classes.Config(**options)


def small_model(family: str, layer_scale, num_classes: int, **extra):
    """Our :data:`SMALL` model (classifier when ``num_classes > 0``), in eval mode."""
    cls = DiNAT if family == "dinat" else NAT
    dilations = SMALL_DILATIONS if family == "dinat" else None
    return cls(
        **SMALL,
        dilations=dilations,
        mlp_ratio=SMALL_MLP_RATIO,
        layer_scale=layer_scale,
        num_classes=num_classes,
        drop_path_rate=0.0,
        **extra,
    ).eval()


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Makes every HF parameter distinct and non-trivial; returns ``model`` in eval mode.

    HF initialises weight matrices and convolutions randomly but ``rpb`` to zeros,
    norms to ones/zeros and layer scales to a constant: those get noise here.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("rpb"):
                param.copy_(noise)
            elif name.endswith("layer_scale_parameters"):
                param.copy_(1.0 + 0.5 * noise)
            elif param.dim() == 1:
                param.add_(0.1 * noise)
    return model.eval()


def sorted_values(tensors) -> torch.Tensor:
    """All values of ``tensors``, flattened and sorted (a key-free fingerprint)."""
    return torch.cat([t.detach().flatten().float() for t in tensors]).sort().values
