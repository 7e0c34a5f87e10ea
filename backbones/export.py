"""Export of NAT / DiNAT models: ``torch.export`` programs and ONNX files.

Neighborhood attention is exported as the custom operators ``torch.ops.nattk.*``
(see :mod:`.attention.ops`); :func:`export_program` then replaces them with their
standard-operator versions (:mod:`.attention.decomposition`), so that the program
and the ONNX file hold only gather / matmul / softmax and friends.

Input size: by default the exported graph is specialised to the example's size.
With ``dynamic=True`` height and width are symbolic over
``[smallest_unpadded_input(model), max_size]``. Below that bound some level's map
is smaller than ``kernel_size * dilation`` and the attention layer zero-pads it (as
the published checkpoints were trained), which is a different graph; such sizes
need a fixed-shape export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import torch
from torch import nn

from .attention.decomposition import DECOMPOSITIONS
from .attention.module import NeighborhoodAttention2D
from .nat import NeighborhoodTransformer


def smallest_unpadded_input(model: nn.Module, stride_of_level0: int = 4) -> int:
    """The smallest image side for which no attention layer of ``model`` pads its map.

    Level ``i`` of a NAT / DiNAT / DiNAT_s backbone sees maps of side
    ``ceil(side / (stride_of_level0 * 2**i))``; a layer pads when that is below
    ``kernel_size * dilation``.

    Raises:
        ValueError: ``model`` contains no NAT / DiNAT / DiNAT_s backbone.
    """
    backbone = _find_backbone(model)
    side = 1
    for level, stage in enumerate(backbone.stages):
        stride = stride_of_level0 * 2**level
        for layer in stage.modules():
            if isinstance(layer, NeighborhoodAttention2D):
                span = max(k * d for k, d in zip(layer.kernel_size, layer.dilation))
                side = max(side, (span - 1) * stride + 1)
    return side


def _find_backbone(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, NeighborhoodTransformer):
            return module
    raise ValueError(f"{type(model).__name__} contains no NAT/DiNAT backbone")


def export_program(
    model: nn.Module,
    example: torch.Tensor,
    dynamic: bool = False,
    max_size: int = 4096,
    decompose: bool = True,
) -> torch.export.ExportedProgram:
    """``torch.export`` of ``model`` on ``example`` ([B, C, H, W]).

    Args:
        model: The module to export (put in eval mode by the caller).
        example: An example input.
        dynamic: Symbolic height and width over
            ``[smallest_unpadded_input(model), max_size]`` (batch stays fixed).
        max_size: Upper bound of the symbolic sides.
        decompose: Replace ``torch.ops.nattk.*`` by standard operators.

    Raises:
        ValueError: ``dynamic`` with an example smaller than the unpadded bound.
    """
    dynamic_shapes = None
    if dynamic:
        low = smallest_unpadded_input(model)
        if min(example.shape[-2:]) < low:
            raise ValueError(
                f"dynamic export needs an example of at least {low}x{low} (the smallest "
                f"size at which no attention layer pads); got {tuple(example.shape[-2:])}"
            )
        dims = (
            torch.export.Dim("height", min=low, max=max_size),
            torch.export.Dim("width", min=low, max=max_size),
        )
        dynamic_shapes = ({2: dims[0], 3: dims[1]},)
    program = torch.export.export(model, (example,), dynamic_shapes=dynamic_shapes)
    return program.run_decompositions(DECOMPOSITIONS) if decompose else program


def to_onnx(
    program: torch.export.ExportedProgram,
    example: torch.Tensor,
    path: Union[str, Path],
    opset: Optional[int] = None,
) -> Path:
    """Writes ``program`` as an ONNX file (one input ``image``) and returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx_program = torch.onnx.export(
        program, (example,), dynamo=True, input_names=["image"], opset_version=opset
    )
    onnx_program.save(str(path))
    return path
