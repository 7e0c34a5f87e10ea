"""What a neighborhood-attention backend is: the :class:`Backend` protocol and :class:`Call`.

A backend is a module. It declares what it implements with module-level constants
and answers one question, :func:`unsupported_reason`, for each call. The registry
(:mod:`.registry`) lists the modules; the dispatcher (:mod:`.functional`) asks
them in order. This module imports no backend, so every backend can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Optional, Protocol, Union

import torch


@dataclass(frozen=True)
class Call:
    """One attention call as a backend sees it when deciding whether it can serve it.

    Attributes:
        q: The query tensor, ``[B, H, W, heads, D]`` (its device and head dim decide).
        dtype: The dtype the attention runs in (the autocast dtype under autocast).
        has_rpb: Whether the call adds a relative position bias.
    """

    q: torch.Tensor
    dtype: torch.dtype
    has_rpb: bool = False

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]


def as_call(call: Union[Call, torch.Tensor]) -> Call:
    """``call`` itself, or a bare query tensor as a call in its own dtype without bias."""
    if isinstance(call, Call):
        return call
    return Call(call, call.dtype, has_rpb=False)


class Backend(Protocol):
    """The interface a backend module implements (checked by :func:`check_backend`).

    Attributes:
        NAME: The name users pass as ``backend=`` and in ``NATTK_NA_BACKEND``.
        AUTO: Whether ``backend="auto"`` may choose it; ``False``: only when forced.
        FUSED: Implements fused attention (``softmax(q.k + rpb) v`` in one op).
        UNFUSED: Implements the QK and AV operations apart (attention dropout,
            attention weights for visualisation).
        KEEPS_PROBS: The fused forward keeps the softmax weights for the backward
            (otherwise the backward recomputes them from a log-sum-exp).
        IN_OPERATOR: Runs inside the ``torch.ops.nattk.*`` custom operators (which
            own autograd, autocast, compile and export) through ``attention_forward``
            / ``attention_backward`` (fused) and ``qk_forward`` / ``qk_backward`` /
            ``av_forward`` / ``av_backward`` (unfused); otherwise the dispatcher calls
            its ``attention(q, k, v, kernel, dilation, rpb, scale)`` directly.
    """

    NAME: str
    AUTO: bool
    FUSED: bool
    UNFUSED: bool
    KEEPS_PROBS: bool
    IN_OPERATOR: bool

    def unsupported_reason(self, call: Call) -> Optional[str]:
        """Why this backend cannot serve ``call``; ``None`` when it can."""


_FLAGS = ("AUTO", "FUSED", "UNFUSED", "KEEPS_PROBS", "IN_OPERATOR")
_OPERATOR_FUNCTIONS = {
    "FUSED": ("attention_forward", "attention_backward"),
    "UNFUSED": ("qk_forward", "qk_backward", "av_forward", "av_backward"),
}


def check_backend(module: ModuleType) -> None:
    """Raises ``TypeError`` naming what ``module`` lacks to be a :class:`Backend`."""
    missing = [] if isinstance(getattr(module, "NAME", None), str) else ["NAME (str)"]
    missing += [
        f"{flag} (bool)" for flag in _FLAGS if not isinstance(getattr(module, flag, None), bool)
    ]
    if not callable(getattr(module, "unsupported_reason", None)):
        missing.append("unsupported_reason(call)")
    if not missing:
        if module.IN_OPERATOR:
            needed = [
                f for flag, fns in _OPERATOR_FUNCTIONS.items() if getattr(module, flag) for f in fns
            ]
        else:
            needed = ["attention"] if module.FUSED else []
            if module.UNFUSED:
                missing.append("UNFUSED = True needs IN_OPERATOR = True")
        missing += [f"{name}()" for name in needed if not callable(getattr(module, name, None))]
        if not (module.FUSED or module.UNFUSED):
            missing.append("FUSED or UNFUSED must be True")
    if missing:
        raise TypeError(
            f"{module.__name__} is not a neighborhood-attention backend: {', '.join(missing)}"
        )
