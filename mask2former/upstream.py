"""Using an upstream Mask2Former checkout without modifying it (no detectron2 import here).

Mask2Former is a plain repository (not on PyPI) whose package is called ``mask2former``;
this toolkit's adapter is ``nattk.mask2former``, so the two never collide. The helpers
below find the checkout, put it on ``sys.path``, supply the compiled MSDeformAttn module
when it was not built (so upstream's own PyTorch fallback runs) and resolve our yamls'
``_BASE_`` against the checkout.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import types
from pathlib import Path
from types import ModuleType
from typing import Optional, Union

logger = logging.getLogger(__name__)

#: Environment variable naming the Mask2Former checkout.
ROOT_ENV = "MASK2FORMER_ROOT"
#: Where the yamls of ``mask2former/configs/`` expect the checkout: next to the toolkit.
TOOLKIT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = TOOLKIT_ROOT.parent / "Mask2Former"
#: Our yamls' ``_BASE_`` point into ``<checkout>/configs/``; this marks where that part starts.
_CHECKOUT_MARKER = "Mask2Former/configs/"
_MSDA = "MultiScaleDeformableAttention"


def find_checkout(root: Union[str, Path, None] = None) -> Path:
    """Returns the Mask2Former checkout: ``root``, else ``$MASK2FORMER_ROOT``, else ``../Mask2Former``.

    Raises:
        FileNotFoundError: The directory is not a Mask2Former checkout.
    """
    chosen = Path(root or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser().resolve()
    missing = [p for p in ("mask2former/__init__.py", "train_net.py") if not (chosen / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{chosen} is not a Mask2Former checkout (no {', '.join(missing)}). Clone "
            "https://github.com/facebookresearch/Mask2Former next to this toolkit, or pass "
            f"--m2f-root / set {ROOT_ENV}."
        )
    return chosen


def ensure_msdeform_attn_fallback() -> bool:
    """Makes upstream's pixel decoder importable when its CUDA op was not compiled.

    Upstream raises ``ModuleNotFoundError`` at import when ``MultiScaleDeformableAttention``
    is missing, although ``MSDeformAttn.forward`` falls back to
    ``ms_deform_attn_core_pytorch`` whenever the op fails. When the compiled module is
    absent this registers a stand-in whose functions raise, which sends every call down
    that fallback (CPU, or a GPU machine without the build).

    Returns:
        ``True`` if the compiled op is available, ``False`` if the stand-in is in use.
    """
    existing = sys.modules.get(_MSDA)
    if existing is not None:
        return not getattr(existing, "__nattk_fallback__", False)
    try:
        importlib.import_module(_MSDA)
        return True
    except ImportError:
        pass

    def unavailable(*args, **kwargs):
        raise RuntimeError(f"{_MSDA} is not compiled; using the PyTorch implementation")

    stand_in = types.ModuleType(_MSDA)
    stand_in.__doc__ = "Stand-in installed by nattk: the compiled MSDeformAttn op is missing."
    stand_in.__nattk_fallback__ = True
    stand_in.ms_deform_attn_forward = unavailable
    stand_in.ms_deform_attn_backward = unavailable
    sys.modules[_MSDA] = stand_in
    logger.warning(
        "%s is not compiled: Mask2Former's pixel decoder uses its PyTorch MSDeformAttn "
        "(slower; build mask2former/modeling/pixel_decoder/ops for GPU training)",
        _MSDA,
    )
    return False


def import_mask2former(root: Union[str, Path, None] = None) -> ModuleType:
    """Imports upstream's ``mask2former`` package from the checkout.

    Raises:
        FileNotFoundError: No checkout (see :func:`find_checkout`).
        ImportError: A different ``mask2former`` package was imported already.
    """
    checkout = find_checkout(root)
    ensure_msdeform_attn_fallback()
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    module = importlib.import_module("mask2former")
    origin = Path(module.__file__).resolve()
    if checkout not in origin.parents:
        raise ImportError(
            f"'mask2former' was imported from {origin}, not from the checkout {checkout}; "
            "run from outside the toolkit's source tree or import upstream first"
        )
    return module


def import_train_net(root: Union[str, Path, None] = None) -> ModuleType:
    """Imports upstream's ``train_net.py`` (its ``Trainer``) as ``mask2former_train_net``."""
    checkout = find_checkout(root)
    import_mask2former(checkout)
    name = "mask2former_train_net"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, checkout / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve_base(config_file: Union[str, Path], base: str, root: Optional[Path] = None) -> str:
    """Resolves a yaml's ``_BASE_`` against a Mask2Former checkout.

    Our yamls name their upstream base relative to a checkout next to the toolkit
    (``../../../../../../Mask2Former/configs/...``). When that file exists, or the base is
    not an upstream one, it is returned unchanged (as Detectron2 would resolve it);
    otherwise the part from ``configs/`` on is looked up under ``root``.
    """
    if os.path.isabs(base) or "://" in base:
        return base
    as_written = Path(config_file).resolve().parent / base
    if as_written.is_file() or _CHECKOUT_MARKER not in base.replace(os.sep, "/"):
        return str(as_written)
    relative = base.replace(os.sep, "/").split(_CHECKOUT_MARKER, 1)[1]
    return str(find_checkout(root) / "configs" / relative)
