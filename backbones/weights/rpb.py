"""The relative position bias policy: an rpb made for another kernel size is resized.

An rpb table is ``[heads, 2k-1, 2k-1]``. The published kernel-11 DiNAT-L weights were
made from the kernel-7 ones by resizing it bicubically; ``align_corners=False`` is this
toolkit's choice, as the official conversion script was not released.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

StateDict = dict[str, torch.Tensor]


def resize_rpb(rpb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubically resizes a ``[heads, 2k-1, 2k-1]`` bias table (e.g. 13×13 -> 21×21)."""
    resized = F.interpolate(rpb[None].float(), size=size, mode="bicubic", align_corners=False)
    return resized[0].to(rpb.dtype)


def resize_rpb_tables(state: Mapping[str, torch.Tensor], kernel_size: int) -> StateDict:
    """``state`` with every rpb table of another size resized for ``kernel_size``."""
    size = (2 * kernel_size - 1,) * 2
    return {
        k: resize_rpb(v, size) if k.endswith(".rpb") and tuple(v.shape[1:]) != size else v
        for k, v in state.items()
    }


def checkpoint_kernel_size(state: Mapping[str, torch.Tensor]) -> int:
    """The kernel size a state dict's ``[heads, 2k-1, 2k-1]`` rpb tables were made for.

    Raises:
        ValueError: No rpb, or rpb tables of several sizes.
    """
    sizes = {v.shape[-1] for k, v in state.items() if k.endswith(".rpb")}
    if not sizes:
        some = ", ".join(list(state)[:3])
        raise ValueError(
            f"the checkpoint has no rpb tables ({len(state)} tensors: {some}, ...), so it "
            "is not a NAT/DiNAT/DiNAT_s one, or not in a layout this toolkit reads"
        )
    if len(sizes) != 1:
        raise ValueError(f"cannot tell the kernel size from rpb tables of sizes {sorted(sizes)}")
    return (sizes.pop() + 1) // 2


def fit_rpb_tables(
    state: StateDict, target: Mapping[str, torch.Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """Resizes, in ``state``, each rpb whose size differs from the model's (same heads).

    Returns:
        ``(resized keys, "13x13 -> 21x21" per resized key, mismatch descriptions)``: the
        last lists every other tensor whose shape differs from the model's.
    """
    resized, sizes, mismatched = [], [], []
    for key, value in list(state.items()):
        if key not in target or target[key].shape == value.shape:
            continue
        if key.endswith(".rpb") and value.dim() == 3 and value.shape[0] == target[key].shape[0]:
            state[key] = resize_rpb(value, tuple(target[key].shape[1:]))
            resized.append(key)
            sizes.append("{}x{} -> {}x{}".format(*value.shape[1:], *target[key].shape[1:]))
        else:
            mismatched.append(
                f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(target[key].shape)}"
            )
    return resized, sizes, mismatched
