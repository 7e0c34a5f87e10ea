"""The distinct attention-layer shapes of the published DiNAT models."""

from __future__ import annotations

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
