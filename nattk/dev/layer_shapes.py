"""The distinct attention-layer shapes of the published DiNAT models."""

from __future__ import annotations

import copy

import torch

from nattk.backbones.attention import NeighborhoodAttention2D
from nattk.backbones.attention.triton_tiling import cdiv
from nattk.backbones.nat import DiNAT
from nattk.backbones.variants import DILATION_PRESETS

#: ``(setup, input height x width after the frameworks' padding, kernel, dilation preset)``.
PUBLISHED_SETUPS = (
    ("COCO 800x1333", (800, 1344), 7, "coco"),
    ("ADE20K 512", (512, 512), 7, "ade20k512"),
    ("ADE20K 640", (640, 640), 7, "ade20k640"),
    ("Mask2Former ADE20K 640", (640, 640), 11, "m2f"),
    ("Mask2Former COCO 1024", (1024, 1024), 11, "m2f"),
    ("Mask2Former Cityscapes 512x1024", (512, 1024), 11, "m2f"),
)


def published_layer_shapes() -> list[tuple[str, int, int, int, int, int]]:
    """``(setup, level, H, W, kernel, dilation)`` of every distinct published DiNAT layer.

    Inputs padded to a multiple of 32 as the frameworks do; maps smaller than
    ``kernel x dilation`` at the size the module pads them to.
    """
    rows = []
    for name, (height, width), kernel, preset in PUBLISHED_SETUPS:
        for level, dilations in enumerate(DILATION_PRESETS[DiNAT.family][preset]):
            h, w = cdiv(height, 4 * 2**level), cdiv(width, 4 * 2**level)
            for d in sorted(set(dilations)):
                rows.append((name, level, max(h, kernel * d), max(w, kernel * d), kernel, d))
    return rows


def attention_inputs(
    model: torch.nn.Module, height: int, width: int, batch: int = 1
) -> list[tuple[NeighborhoodAttention2D, tuple[int, ...]]]:
    """Every attention layer of ``model`` with its input shape ``[B, H, W, C]``.

    The shapes come from one forward of a ``meta``-device copy of the model on a
    ``batch x 3 x height x width`` input: no computation, the model's own strides and
    rounding.
    """
    layers = {
        name: m for name, m in model.named_modules() if isinstance(m, NeighborhoodAttention2D)
    }
    shapes: dict[str, tuple[int, ...]] = {}
    shadow = copy.deepcopy(model).to("meta")

    def record(name: str):
        def hook(_module, args) -> None:
            shapes.setdefault(name, tuple(args[0].shape))

        return hook

    for name, module in shadow.named_modules():
        if name in layers:
            module.register_forward_pre_hook(record(name))
    with torch.no_grad():
        shadow(torch.empty(batch, 3, height, width, device="meta"))
    return [(layers[name], shape) for name, shape in shapes.items()]
