"""Builds and loads the C++ CPU kernels of neighborhood attention.

The extension is compiled with ``torch.utils.cpp_extension.load`` into torch's
extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``).
The environment step (``tools/setup_env.sh``) builds it ahead of time by running
this module; at run time an up-to-date build is simply loaded, and a missing one is
compiled on first use (about a minute). Where no compiler works, :func:`load`
returns ``None``, the ``cpu`` backend reports itself unavailable and ``auto``
falls back to the pure-PyTorch backend. ``NATTK_CPU_EXTENSION=0`` disables it.

Run ``python -c "from nattk.backbones.attention import cpu_extension as c; c.main()"``
to (re)build and report.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from types import ModuleType

_SOURCE = Path(__file__).with_name("csrc") / "na2d_cpu.cpp"
# One cache entry per checkout, so two clones never rebuild over each other.
_NAME = "nattk_na2d_cpu_" + hashlib.sha1(str(_SOURCE.parent).encode()).hexdigest()[:8]
_FLAGS = ["-O3", "-fopenmp"]

_module: ModuleType | None = None
_error: str | None = None
_tried = False

logger = logging.getLogger(__name__)


def _cflags() -> list[str]:
    # Built on the machine that runs it, so tune for its CPU unless asked not to.
    native = os.environ.get("NATTK_CPU_EXTENSION_NATIVE", "1") != "0"
    return _FLAGS + (["-march=native"] if native else [])


def load(verbose: bool = False) -> ModuleType | None:
    """Returns the compiled extension, building it if needed; ``None`` if unavailable."""
    global _module, _error, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("NATTK_CPU_EXTENSION", "1") == "0":
        _error = "disabled by NATTK_CPU_EXTENSION=0"
        return None
    try:
        from torch.utils import cpp_extension

        _module = cpp_extension.load(
            name=_NAME,
            sources=[str(_SOURCE)],
            extra_cflags=_cflags(),
            extra_ldflags=["-fopenmp"],
            verbose=verbose,
        )
    except Exception as exc:  # any compiler/linker failure means "not available"
        _error = (
            f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
        )
        logger.warning("nattk: CPU neighborhood-attention kernels unavailable (%s)", _error)
        _module = None
    return _module


def status() -> str:
    """One line saying whether the CPU kernels are usable, for ``collect_env``."""
    module = load()
    if module is not None:
        return f"available ({Path(module.__file__).parent})"
    return f"unavailable: {_error}"


def main() -> int:
    """Builds (if needed) and reports; exit status 0 when the kernels load."""
    print(f"nattk CPU neighborhood-attention kernels: {status()}")
    return 0 if _module is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
