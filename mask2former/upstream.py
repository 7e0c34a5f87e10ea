"""Using an upstream checkout (Mask2Former, OneFormer) without modifying it (no detectron2 import).

Both are plain repositories (not on PyPI) with a package (``mask2former``, ``oneformer``)
and a ``train_net.py``; this toolkit's adapter is ``nattk.mask2former``, so the names never
collide. The helpers below find a checkout, put it on ``sys.path``, supply the compiled
MSDeformAttn module when it was not built (both pixel decoders then run their own PyTorch
fallback) and resolve our Mask2Former yamls' ``_BASE_`` against the checkout.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Optional, Union

from nattk.dev import upstream_sources as pins
from nattk.dev.upstream_sources import PinnedUpstream

logger = logging.getLogger(__name__)

TOOLKIT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Upstream:
    """An upstream Detectron2 project used from a checkout.

    Attributes:
        pin: Its pinned repository (name, environment variable, URL, commit), kept in
            one place, :mod:`nattk.dev.upstream_sources`, which also sets it up.
        package: Its Python package.
        root_flag: The launcher's flag naming the checkout.
    """

    pin: PinnedUpstream
    package: str
    root_flag: str

    @property
    def name(self) -> str:
        """Repository name; the default checkout is ``../<name>`` next to the toolkit."""
        return self.pin.name

    @property
    def root_env(self) -> str:
        """Environment variable naming the checkout (used without the flag)."""
        return self.pin.env

    @property
    def url(self) -> str:
        """Where to clone it from."""
        return self.pin.url

    @property
    def default_root(self) -> Path:
        """``<name>`` next to the toolkit (where our Mask2Former yamls expect it)."""
        return TOOLKIT_ROOT.parent / self.name


MASK2FORMER = Upstream(pins.MASK2FORMER, package="mask2former", root_flag="--m2f-root")
ONEFORMER = Upstream(pins.ONEFORMER, package="oneformer", root_flag="--oneformer-root")
#: Our yamls' ``_BASE_`` point into ``<checkout>/configs/``; this marks where that part starts.
_CHECKOUT_MARKER = "Mask2Former/configs/"
_MSDA = "MultiScaleDeformableAttention"
#: Written by ``tools/setup_d2_env.sh`` into the environment it makes: the checkouts it used.
RECORD_NAME = "nattk-upstream.json"


def recorded_checkout(project: Upstream) -> Optional[Path]:
    """The checkout of ``project`` that this environment was set up with, if any.

    ``tools/setup_d2_env.sh`` records where each upstream came from (a user's path, a
    sibling clone, an unpacked snapshot or a clone in the build folder) in
    ``<sys.prefix>/nattk-upstream.json``.
    """
    record = Path(sys.prefix) / RECORD_NAME
    try:
        return Path(json.loads(record.read_text())[project.name]["path"])
    except (OSError, ValueError, KeyError, TypeError):  # no record, or not one of ours
        return None


def _is_checkout(path: Path, project: Upstream) -> bool:
    return all((path / p).is_file() for p in _checkout_files(project))


def _checkout_files(project: Upstream) -> tuple:
    return (f"{project.package}/__init__.py", "train_net.py")


def find_checkout(root: Union[str, Path, None] = None, project: Upstream = MASK2FORMER) -> Path:
    """Returns a checkout: ``root``, else ``$<ROOT_ENV>``, else ``../<name>``, else the
    one this environment was set up with (:func:`recorded_checkout`).

    For Mask2Former: ``--m2f-root``, ``$MASK2FORMER_ROOT``, ``../Mask2Former``; for
    OneFormer: ``--oneformer-root``, ``$ONEFORMER_ROOT``, ``../OneFormer``.

    Raises:
        FileNotFoundError: The directory is not a checkout of ``project``.
    """
    chosen = root or os.environ.get(project.root_env)
    if not chosen:
        # As tools/setup_d2_env.sh decides: a sibling folder counts only if it is a checkout.
        sibling, recorded = project.default_root, recorded_checkout(project)
        use_record = recorded is not None and not _is_checkout(sibling, project)
        chosen = recorded if use_record else sibling
    chosen = Path(chosen).expanduser().resolve()
    missing = [p for p in _checkout_files(project) if not (chosen / p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{chosen} is not a {project.name} checkout (no {', '.join(missing)}). Run "
            f"`make env-d2` (docs/detectron2_mask2former.md#install), clone {project.url} "
            f"next to this toolkit, or pass {project.root_flag} / set {project.root_env}."
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


def import_package(
    root: Union[str, Path, None] = None, project: Upstream = MASK2FORMER
) -> ModuleType:
    """Imports upstream's package (``mask2former``, ``oneformer``) from the checkout.

    Raises:
        FileNotFoundError: No checkout (see :func:`find_checkout`).
        ImportError: A package of that name was imported from somewhere else already.
    """
    checkout = find_checkout(root, project)
    ensure_msdeform_attn_fallback()
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    module = importlib.import_module(project.package)
    origin = Path(module.__file__).resolve()
    if checkout not in origin.parents:
        raise ImportError(
            f"{project.package!r} was imported from {origin}, not from the checkout "
            f"{checkout}; run from outside the toolkit's source tree or import upstream first"
        )
    return module


def import_train_net(
    root: Union[str, Path, None] = None, project: Upstream = MASK2FORMER
) -> ModuleType:
    """Imports upstream's ``train_net.py`` (its ``Trainer``) as ``<package>_train_net``."""
    checkout = find_checkout(root, project)
    import_package(checkout, project)
    name = f"{project.package}_train_net"
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
