"""Published weights through ``torch.hub``'s download cache (``$TORCH_HOME/hub/checkpoints``).

A file already in the cache is used as it is (no network); one that is not is
downloaded once by ``torch.hub.download_url_to_file``, which writes a temporary file
and renames it, so an interrupted download leaves no partial file in the cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .load import LoadReport, load_pretrained
from .pretrained import PretrainedWeights

logger = logging.getLogger(__name__)


def cached_file(weights: PretrainedWeights, progress: bool = True) -> Path:
    """The local copy of ``weights``, downloaded into the torch.hub cache if absent.

    Raises:
        RuntimeError: The download failed (the message names the URL and cache path).
    """
    path = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", weights.url, path)
    try:
        torch.hub.download_url_to_file(weights.url, str(path), progress=progress)
    except Exception as error:  # urllib raises several types; all mean "no file"
        raise RuntimeError(
            f"could not download {weights.tag} from {weights.url} ({error}); without "
            f"network access, put the file at {path}"
        ) from error
    return path


def load_published(
    model: nn.Module, weights: PretrainedWeights, trust: bool = False, progress: bool = True
) -> LoadReport:
    """Loads published weights (from the cache, or downloaded) into ``model``.

    Args:
        model: The model (classifier or dense backbone).
        weights: An entry of :data:`~.pretrained.PRETRAINED`.
        trust: Unpickle arbitrary objects (see :func:`~.io.load_checkpoint_file`).
        progress: Show a download progress bar.
    """
    path = cached_file(weights, progress=progress)
    logger.info("%s: loading %s (%s)", type(model).__name__, weights.tag, path)
    return load_pretrained(model, path, trust=trust)
