"""Makes MMEngine 0.10.7 work on torch >= 2.6 without disabling weights-only loading.

torch 2.6 made ``torch.load(weights_only=True)`` the default. MMEngine's resume loads
its own training checkpoints, which pickle a few non-tensor objects (numpy arrays and
scalars in the message hub, ``HistoryBuffer``), so ``--resume`` fails with
``UnpicklingError: Weights only load failed``. Instead of turning weights-only
loading off, :func:`checkpoint_allowlist` allow-lists exactly those globals for the
duration of a ``with`` block (our ``tools/train.py`` wraps the run in it).

:func:`register_safetensors_loader` teaches MMEngine's ``CheckpointLoader`` to read
local ``.safetensors`` files (``load_from``, ``init_cfg`` checkpoints) without pickle.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

#: ``CheckpointLoader`` schemes (regular expressions matched at the start of a path):
#: local ``.safetensors`` paths (no ``://``), and ``.safetensors`` URLs, which are refused
#: with a clear message instead of reaching ``torch.load``. The URL pattern sorts before
#: MMEngine's ``https://``/``http://`` ones, which the loader tries in reverse order.
SAFETENSORS_SCHEMES = (r"(?!.*://).*\.safetensors$", r"https?://(?=.*\.safetensors$)")

#: MMEngine versions whose private FLOP-handle table :func:`register_na_flop_handles` was
#: tested with (the toolkit pins mmengine 0.10.7).
TESTED_MMENGINE = "0.10.x"


def mmengine_checkpoint_globals() -> list:
    """The globals an MMEngine training checkpoint contains besides tensors.

    numpy's array/scalar reconstructors are listed under both module names
    (``numpy._core`` since numpy 2, ``numpy.core`` before), so a checkpoint written
    with either numpy loads with the other.
    """
    import importlib

    import numpy as np
    from mmengine.logging import HistoryBuffer

    numpy2 = int(np.__version__.split(".")[0]) >= 2
    name = "numpy._core.multiarray" if numpy2 else "numpy.core.multiarray"
    multiarray = importlib.import_module(name)
    reconstructors = [
        (getattr(multiarray, attr), f"{module}.multiarray.{attr}")
        for attr in ("scalar", "_reconstruct")
        for module in ("numpy._core", "numpy.core")
    ]
    dtype_classes = {
        type(np.dtype(t))
        for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_)
    }
    return [
        np.dtype,
        np.ndarray,
        HistoryBuffer,
        getattr,  # numpy uses it to rebuild scalars; only reachable from the globals above
        *reconstructors,
        *sorted(dtype_classes, key=lambda c: c.__name__),
    ]


@contextlib.contextmanager
def checkpoint_allowlist() -> Iterator[None]:
    """Within the block, weights-only ``torch.load`` accepts MMEngine checkpoints."""
    import torch

    with torch.serialization.safe_globals(mmengine_checkpoint_globals()):
        yield


def register_na_flop_handles() -> None:
    """Makes MMEngine's ``FlopAnalyzer`` (and ``get_model_complexity_info``) count NA.

    MMEngine builds every analyzer from its table of default op handles; adding the
    toolkit's neighborhood-attention handles there (idempotent) is what lets a plain
    ``get_model_complexity_info(model, input_shape)`` report the published FLOPs.

    Raises:
        RuntimeError: MMEngine lacks that (private) table: a version this was not tested with.
    """
    import mmengine
    from mmengine.analysis import complexity_analysis

    from nattk.backbones.flops import NA_FLOP_HANDLES

    # MMEngine has no public way to extend the defaults that get_model_complexity_info's
    # internal FlopAnalyzer uses, so the private table is edited (checked first).
    table = getattr(complexity_analysis, "_DEFAULT_SUPPORTED_FLOP_OPS", None)
    if not isinstance(table, dict):
        raise RuntimeError(
            f"mmengine {mmengine.__version__} lacks the private dict "
            "mmengine.analysis.complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS that "
            f"register_na_flop_handles extends (tested with mmengine {TESTED_MMENGINE}); "
            "count with FlopAnalyzer(model, inputs).set_op_handle(**NA_FLOP_HANDLES) instead"
        )
    table.update(NA_FLOP_HANDLES)


def load_from_safetensors(filename: str, map_location=None) -> dict:
    """``CheckpointLoader`` loader of local ``.safetensors`` files.

    Args:
        filename: Path of the file.
        map_location: A device (``str`` or ``torch.device``) to move the tensors to;
            anything else (``None``, a callable) leaves them on the CPU.

    Returns:
        ``{"state_dict": tensors, "meta": {}}``, the layout of an MMEngine checkpoint.

    Raises:
        ValueError: ``filename`` is a URL (download it first), or not valid safetensors.
    """
    from nattk.backbones.weights import read_safetensors

    return {"state_dict": read_safetensors(filename, map_location), "meta": {}}


def register_safetensors_loader() -> None:
    """Registers :func:`load_from_safetensors` with MMEngine's ``CheckpointLoader`` (idempotent).

    Every other path keeps its loader: the patterns match only names ending in
    ``.safetensors``.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    CheckpointLoader.register_scheme(SAFETENSORS_SCHEMES, load_from_safetensors, force=True)
