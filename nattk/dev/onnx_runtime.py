"""Running exported ONNX files with ONNX Runtime and comparing them with PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch


def onnxruntime_session(path: Union[str, Path]):
    """An ONNX Runtime CPU session of an exported file."""
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnxruntime_outputs(session, image: torch.Tensor) -> list[torch.Tensor]:
    """Runs ``session`` (or the file it names) with ONNX Runtime on ``image``."""
    if isinstance(session, (str, Path)):
        session = onnxruntime_session(session)
    name = session.get_inputs()[0].name
    return [torch.from_numpy(o) for o in session.run(None, {name: image.numpy()})]


def max_abs_difference(expected, actual) -> float:
    """Largest absolute difference between two tensors or two lists of tensors."""
    if isinstance(expected, torch.Tensor):
        expected = [expected]
    if isinstance(actual, torch.Tensor):
        actual = [actual]
    if len(expected) != len(actual):
        raise ValueError(f"{len(expected)} reference outputs but {len(actual)} exported ones")
    return max(
        (e.detach().float() - a.float()).abs().max().item() if e.numel() else 0.0
        for e, a in zip(expected, actual)
    )
