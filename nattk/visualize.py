"""Pictures for the quickstart and the demo: overlays, training curves, neighborhoods.

Only numpy, OpenCV and matplotlib (Agg) are used; nothing here imports a framework.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from nattk.backbones.attention.indices import axis_tables
from nattk.backbones.weights.files import atomic_output

PathLike = Union[str, Path]


def class_palette(count: int) -> np.ndarray:
    """``count`` fixed, distinguishable-enough RGB colours (``uint8``, seeded)."""
    rng = np.random.default_rng(1)
    colors = rng.integers(40, 256, size=(max(count, 1), 3))
    return colors.astype(np.uint8)


def overlay_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    class_names: Sequence[str],
    masks: Optional[np.ndarray] = None,
    score_thr: float = 0.5,
) -> np.ndarray:
    """Draws detections (boxes, masks, ``name score``) on an RGB ``uint8`` image."""
    import cv2

    canvas = image.copy()
    colors = class_palette(len(class_names))
    for i in np.flatnonzero(scores >= score_thr):
        color = tuple(int(c) for c in colors[labels[i]])
        if masks is not None:
            mask = masks[i].astype(bool)
            canvas[mask] = (0.5 * canvas[mask] + 0.5 * np.array(color)).astype(np.uint8)
        x0, y0, x1, y1 = (int(round(v)) for v in boxes[i])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), color, 1)
        text = f"{class_names[labels[i]]} {scores[i]:.2f}"
        cv2.putText(canvas, text, (x0, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1)
    return canvas


def overlay_semantic(
    image: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """Blends a label map (values outside the palette are left undrawn) onto an RGB image."""
    palette = np.asarray(palette, dtype=np.float32)
    valid = (labels >= 0) & (labels < len(palette))
    canvas = image.astype(np.float32)
    canvas[valid] = (1 - alpha) * canvas[valid] + alpha * palette[labels[valid]]
    return canvas.astype(np.uint8)


def save_png(path: PathLike, image: np.ndarray) -> Path:
    """Writes an RGB ``uint8`` image as PNG (creating the folder)."""
    import cv2

    path = Path(path)
    with atomic_output(path) as staging:
        if not cv2.imwrite(str(staging), np.ascontiguousarray(image[:, :, ::-1])):
            raise OSError(f"could not write {path}")
    return path


def read_scalars(path: PathLike) -> list[dict]:
    """Reads MMEngine's ``vis_data/scalars.json`` (one json object per line)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def plot_curves(records: list[dict], metric_key: str, out: PathLike, title: str = "") -> Path:
    """Plots the training loss and the validation metric against the iteration.

    Raises:
        ValueError: No loss values in ``records``.
    """
    plt = _pyplot()
    losses = [(r["iter"], r["loss"]) for r in records if "loss" in r and "iter" in r]
    if not losses:
        raise ValueError("no training losses to plot")
    metrics = [(r.get("step", r.get("iter")), r[metric_key]) for r in records if metric_key in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(*zip(*losses), color="tab:blue", lw=1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss", color="tab:blue")
    if metrics:
        twin = ax.twinx()
        twin.plot(*zip(*metrics), "o--", color="tab:red")
        twin.set_ylabel(metric_key, color="tab:red")
        twin.set_ylim(0, 1)
    ax.set_title(title)
    return _save(fig, out)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: PathLike) -> Path:
    fig.tight_layout()
    out = Path(out)
    try:
        with atomic_output(out) as staging:
            fig.savefig(staging)
    finally:
        _pyplot().close(fig)
    return out


def neighborhood_weights(attention, tokens: torch.Tensor, query: tuple[int, int]) -> np.ndarray:
    """Where one query of a neighborhood-attention layer looks, and how much.

    Args:
        attention: A :class:`~nattk.backbones.attention.NeighborhoodAttention2D`.
        tokens: Its input ``[1, H, W, C]``.
        query: ``(row, col)`` of the query token.

    Returns:
        ``[H, W]`` attention weights of the query (mean over heads); zero outside its
        (dilated) neighborhood.
    """
    height, width = tokens.shape[1:3]
    with torch.no_grad():
        weights = attention.attention_weights(tokens)[0, query[0], query[1]].mean(0)
    # The layer zero-pads maps smaller than kernel * dilation; its tables are for that size.
    (k_rows, k_cols), (d_rows, d_cols) = attention.kernel_size, attention.dilation
    padded = (max(height, k_rows * d_rows), max(width, k_cols * d_cols))
    rows = axis_tables(padded[0], k_rows, d_rows).key_positions()[query[0]].numpy()
    cols = axis_tables(padded[1], k_cols, d_cols).key_positions()[query[1]].numpy()
    grid = np.zeros(padded)
    grid[np.ix_(rows, cols)] = weights.reshape(k_rows, k_cols).numpy()
    return grid[:height, :width]


def plot_neighborhoods(
    backbone, image: np.ndarray, mean: Sequence[float], std: Sequence[float], out: PathLike
) -> Path:
    """Draws the DiNAT-paper figure from a model: NA vs DiNA neighborhoods of two queries.

    The first level's blocks are searched for one with dilation 1 and one with a larger
    dilation; each is fed the tokens that reach it for ``image`` and the weights of a
    centre and a corner query are shown over the image.

    Raises:
        ValueError: The first level has no dilated block (a NAT model).
    """
    plt = _pyplot()
    level = backbone.stages[0]
    dilations = [block.attn.dilation[0] for block in level.blocks]
    if 1 not in dilations or max(dilations) == 1:
        raise ValueError(f"level 0 needs dilation 1 and a dilated block, has {dilations}")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    x = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    inputs = {}
    with torch.no_grad():
        tokens = backbone.patch_embed(x)
        for block, dilation in zip(level.blocks, dilations):
            inputs.setdefault(dilation, (block, block.norm1(tokens)))
            tokens = block(tokens)
    height, width = tokens.shape[1:3]
    queries = {"centre query": (height // 2, width // 2), "corner query": (1, 1)}
    chosen = [1, max(dilations)]
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 6.6), dpi=110)
    for row, (name, query) in enumerate(queries.items()):
        for col, dilation in enumerate(chosen):
            block, normed = inputs[dilation]
            weights = neighborhood_weights(block.attn, normed, query)
            ax = axes[row, col]
            ax.imshow(image, extent=(0, width, height, 0))
            shown = np.ma.masked_where(weights == 0, weights)
            ax.imshow(shown, cmap="autumn", alpha=0.75, extent=(0, width, height, 0))
            ax.add_patch(plt.Rectangle((query[1], query[0]), 1, 1, fill=False, ec="cyan", lw=2))
            kind = "NA" if dilation == 1 else f"DiNA (dilation {dilation})"
            ax.set_title(f"{kind}, {name}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    kernel = level.blocks[0].attn.kernel_size[0]
    fig.suptitle(
        f"{kernel}x{kernel} neighborhoods at level 0 (stride 4): attention weights of the model",
        fontsize=9,
    )
    return _save(fig, out)
