"""The neighborhood-attention backends, in the order ``backend="auto"`` tries them.

Adding a backend is one new module implementing :class:`~.backend_api.Backend`
and one line in :data:`REGISTERED`. ``auto`` takes the first backend with
``AUTO = True`` whose ``unsupported_reason`` accepts the call; the others run only
when forced (``backend=``, a module's ``backend`` attribute or ``NATTK_NA_BACKEND``).
"""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

from . import cpu_backend, flex_backend, natten_backend, torch_backend, triton_backend
from .backend_api import check_backend

#: Every backend; the order is ``auto``'s preference (among ``AUTO`` ones), and this is
#: the one place it is written. ``torch`` serves every call.
REGISTERED: tuple[ModuleType, ...] = (
    natten_backend,  # CUDA, NATTEN >= 0.20 installed, fused only, no rpb; auto
    triton_backend,  # CUDA (or Triton's CPU interpreter), fused only; forced only
    flex_backend,  # CUDA, torch's compiled flex_attention; forced only
    cpu_backend,  # CPU float32/float64 when the C++ extension is built; auto
    torch_backend,  # any device and dtype, forward and backward; auto
)


class Registry:
    """Backend modules by name, with the orders the dispatcher needs.

    Args:
        modules: Backend modules in ``auto``'s order of preference.

    Raises:
        TypeError: A module is not a :class:`~.backend_api.Backend`, or two share a name.
    """

    def __init__(self, modules: Sequence[ModuleType]) -> None:
        for module in modules:
            check_backend(module)
        self.modules = tuple(modules)
        self._by_name = {module.NAME: module for module in self.modules}
        if len(self._by_name) != len(self.modules):
            raise TypeError(f"two backends share a name: {[m.NAME for m in self.modules]}")
        #: Every name, in registry order.
        self.names = tuple(self._by_name)
        #: What ``auto`` tries, in order.
        self.auto_order = tuple(m.NAME for m in self.modules if m.AUTO)
        #: Backends with the fused op / with the unfused QK and AV ops.
        self.fused = tuple(m.NAME for m in self.modules if m.FUSED)
        self.unfused = tuple(m.NAME for m in self.modules if m.UNFUSED)

    def get(self, name: str) -> ModuleType:
        """The backend module called ``name``.

        Raises:
            ValueError: No backend has that name.
        """
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(
                f"backend must be one of {('auto', *self.names)}, got {name!r}"
            ) from None

    def operator_backend(self, name: str) -> ModuleType:
        """The module the ``torch.ops.nattk`` operators run for backend ``name``.

        Raises:
            ValueError: ``name`` is not a backend that runs inside the operators.
        """
        module = self._by_name.get(name)
        if module is None or not module.IN_OPERATOR:
            have = sorted(m.NAME for m in self.modules if m.IN_OPERATOR)
            raise ValueError(f"nattk operators have no implementation {name!r} (have {have})")
        return module


_active = Registry(REGISTERED)


def active() -> Registry:
    """The registry the dispatcher and the operators use (built from :data:`REGISTERED`)."""
    return _active
