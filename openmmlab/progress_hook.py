"""An MMEngine hook that tells a listener how training and validation advance.

The runner's own logger reports progress as log lines; :class:`ProgressHook` instead
calls methods of any object (the listener) so that an application can draw its own
progress display (``nattk.quickstart`` does) while the log goes elsewhere.

The listener may define any of these methods; missing ones are skipped:

* ``train_iter(done, total, loss)``: after each training iteration (``loss`` is
  ``None`` when the model reported none);
* ``val_begin(total, at_iter)``: a validation of ``total`` batches starts, after
  ``at_iter`` training iterations;
* ``val_iter(done, total)``: after each validation batch;
* ``val_end(metrics, at_iter)``: the validation's metrics (floats).
"""

from __future__ import annotations

from typing import Any, Optional

from mmengine.hooks import Hook


class ProgressHook(Hook):
    """Forwards training/validation progress of a runner to ``listener``.

    Args:
        listener: Object with some of the methods described in this module's docstring.
    """

    priority = "LOW"

    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self._val_total = 0

    def _call(self, name: str, *args) -> None:
        method = getattr(self.listener, name, None)
        if method is not None:
            method(*args)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Reports the iteration count and the iteration's total loss."""
        loss = _scalar(outputs.get("loss")) if isinstance(outputs, dict) else None
        self._call("train_iter", runner.iter + 1, runner.max_iters, loss)

    def before_val_epoch(self, runner) -> None:
        """Reports the start of a validation and its number of batches."""
        self._val_total = len(runner.val_loop.dataloader)
        self._call("val_begin", self._val_total, runner.iter)

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Reports how many validation batches are done."""
        self._call("val_iter", batch_idx + 1, self._val_total)

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        """Reports the validation's numeric metrics as plain floats."""
        values = {key: _scalar(value) for key, value in (metrics or {}).items()}
        values = {key: value for key, value in values.items() if value is not None}
        self._call("val_end", values, runner.iter)


def _scalar(value) -> Optional[float]:
    """``float(value)`` for numbers and one-element tensors/arrays; ``None`` otherwise."""
    if hasattr(value, "detach"):
        value = value.detach()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
