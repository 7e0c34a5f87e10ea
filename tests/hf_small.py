"""The small NAT/DiNAT the Hugging Face tests build, shared with the fixture generator.

Torch only (no nattk import): ``tests/fixtures/make_hf_4_46_3.py`` runs it under
transformers 4.46.3.
"""

from __future__ import annotations

import torch

#: A small NAT/DiNAT: at 96x128 its maps (24x32 ... 3x4) need no padding; at 40x56 and
#: 56x72 the dilated and the last levels do.
SMALL = dict(embed_dim=8, depths=[1, 2, 2, 1], num_heads=[1, 2, 2, 4], kernel_size=3)
SMALL_DILATIONS = [[1], [1, 2], [1, 2], [1]]
SMALL_MLP_RATIO = 2.0
#: Inputs of the fixtures: non-square, and two that need small-map padding.
INPUT_SHAPES = {"x": (1, 3, 96, 128), "x_small": (1, 3, 40, 56), "x_56x72": (1, 3, 56, 72)}
#: The batch the live tests use.
INPUT_SHAPE = (2, 3, 96, 128)


def hf_config_kwargs(family: str, layer_scale, **extra) -> dict:
    """``NatConfig``/``DinatConfig`` arguments of :data:`SMALL` (``layer_scale`` ``None``: off)."""
    options = dict(SMALL, mlp_ratio=SMALL_MLP_RATIO, drop_path_rate=0.0, **extra)
    options["layer_scale_init_value"] = layer_scale or 0.0
    if family == "dinat":
        options["dilations"] = SMALL_DILATIONS
    return options


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


def inputs(seed: int = 0) -> dict:
    """The :data:`INPUT_SHAPES` tensors, reproducibly random, fp32 (exact in fp64)."""
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=generator) for name, shape in INPUT_SHAPES.items()}
