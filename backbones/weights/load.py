"""Loading weights into a model, never quietly: :func:`load_pretrained` and :class:`LoadReport`.

:func:`load_pretrained` logs ``loaded n/n tensors, missing [...], unexpected [...]``,
names the classifier extras of an ImageNet checkpoint as expected, resizes an rpb made
for another kernel size (logged at WARNING level), and raises when backbone tensors
(e.g. every ``rpb``) are missing unless the caller opts out with ``allow_missing=True``.
:func:`missing_weights_error` is the same rule for a backbone that a framework's own
checkpointer loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from os import PathLike
from typing import Mapping, Optional, Union

from torch import nn

from .layouts import read_checkpoint
from .official import CLASSIFIER_KEY, DENSE_NORM_KEY
from .rpb import fit_rpb_tables

logger = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: Model tensors that received a value.
        total: Model tensors.
        missing: Model tensors the checkpoint has no value for (not expected ones).
        unexpected: Checkpoint tensors the model has no place for (not expected ones).
        expected_missing: Dense-output norms a classifier checkpoint cannot have.
        expected_unexpected: Classifier tensors a dense model has no place for.
        resized: rpb tables resized for the model's kernel size.
        resized_sizes: ``"13x13 -> 21x21"`` per resized table.
        layout: The checkpoint's layout (a name of :data:`~.layouts.LAYOUTS`); empty when
            unknown.
    """

    loaded: int
    total: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    expected_missing: list[str] = field(default_factory=list)
    expected_unexpected: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)
    resized_sizes: list[str] = field(default_factory=list)
    layout: str = ""

    def summary(self) -> str:
        """The one-line log message."""
        parts = [f"loaded {self.loaded}/{self.total} tensors"]
        parts.append(f"missing {self.missing}")
        if self.expected_missing:
            parts.append(f"(new dense-output norms, initialised fresh: {self.expected_missing})")
        parts.append(f"unexpected {self.unexpected}")
        if self.expected_unexpected:
            parts.append(f"(classifier tensors, expected: {_compact(self.expected_unexpected)})")
        if self.resized:
            parts.append(f"rpb resized bicubically: {len(self.resized)} ({self.resize_note()})")
        return ", ".join(parts)

    def resize_note(self) -> str:
        """``"13x13 -> 21x21: levels.0.blocks.0.attn.rpb, ..."``, one group per size change."""
        groups: dict[str, list[str]] = {}
        for key, change in zip(self.resized, self.resized_sizes):
            groups.setdefault(change, []).append(key)
        return "; ".join(
            f"{change}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
            for change, keys in groups.items()
        )


def _compact(keys: list[str]) -> list[str]:
    return sorted({k.split(".")[0] + ".*" for k in keys})


def load_pretrained(
    model: nn.Module,
    checkpoint: Union[str, PathLike, Mapping],
    allow_missing: bool = False,
    log: Optional[logging.Logger] = None,
    prefix: Optional[str] = None,
    trust: bool = False,
) -> LoadReport:
    """Loads a checkpoint into a NAT/DiNAT/DiNAT_s model and reports what happened.

    Args:
        model: The model (classifier or dense backbone).
        checkpoint: Path or loaded object, in any layout of :data:`~.layouts.LAYOUTS`.
        allow_missing: Do not raise when model tensors are absent from the checkpoint.
        log: Logger for the summary line (default: this module's).
        prefix: Use only the checkpoint keys under this prefix (see
            :func:`~.layouts.read_state_dict`).
        trust: Unpickle arbitrary objects (see :func:`~.io.load_checkpoint_file`); only for
            files from a trusted source.

    An rpb table made for another kernel size (``[heads, 2k-1, 2k-1]`` with the model's
    heads) is resized bicubically, as the published kernel-11 DiNAT-L weights were made
    from the kernel-7 ones; that is logged at WARNING level with the tensors and sizes,
    and listed in the report (``resized``, ``resized_sizes``).

    Returns:
        A :class:`LoadReport`.

    Raises:
        ValueError: Missing backbone tensors (unless ``allow_missing``), or tensors
            whose shapes differ (other than a resizable rpb).
    """
    layout, state = read_checkpoint(checkpoint, prefix=prefix, trust=trust)
    target = model.state_dict()
    resized, sizes, mismatched = fit_rpb_tables(state, target)
    if mismatched:
        raise ValueError("checkpoint tensors do not fit the model:\n  " + "\n  ".join(mismatched))

    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    is_classifier_ckpt = any(CLASSIFIER_KEY.match(k) for k in state)
    dense_model = not any(CLASSIFIER_KEY.match(k) for k in target)
    report = LoadReport(
        loaded=len(target) - len(missing),
        total=len(target),
        resized=resized,
        resized_sizes=sizes,
        layout=layout,
    )
    for key in missing:
        expected = dense_model and is_classifier_ckpt and DENSE_NORM_KEY.match(key)
        (report.expected_missing if expected else report.missing).append(key)
    for key in unexpected:
        expected = dense_model and CLASSIFIER_KEY.match(key)
        (report.expected_unexpected if expected else report.unexpected).append(key)

    if report.missing and not allow_missing:
        raise ValueError(
            f"checkpoint lacks {len(report.missing)} of the model's tensors "
            f"(e.g. {report.missing[:5]}); pass allow_missing=True to load anyway"
        )
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=False)
    (log or logger).info(report.summary())
    if report.resized:
        # Legitimate (the kernel-11 DiNAT-L weights were made this way) but a change of the
        # weights: shown by default, never only at INFO.
        (log or logger).warning(
            f"the checkpoint's rpb tables were made for another kernel size: "
            f"{len(report.resized)} resized bicubically ({report.resize_note()})"
        )
    return report


def missing_weights_error(
    owner: str, missing: list[str], total: int, rpb_hint: str = ""
) -> Optional[str]:
    """The refusal rule for a backbone loaded inside a framework's own checkpointer.

    Fresh dense-output norms (``norm0``..``norm3``: ImageNet checkpoints have none) are
    fine; any other absent tensor, e.g. an ``rpb`` the framework skipped as a shape
    mismatch, is not.

    Args:
        owner: Name of the model, for the message.
        missing: Missing keys, relative to the backbone.
        total: Number of backbone tensors.
        rpb_hint: Appended (after ``"; "``) when an ``rpb`` is among the missing keys:
            the framework's way of resizing one.

    Returns:
        ``None`` when loading may go on, else the message naming what is missing.
    """
    missing = [key for key in missing if not DENSE_NORM_KEY.match(key)]
    if not missing:
        return None
    shown = ", ".join(missing[:4]) + (", ..." if len(missing) > 4 else "")
    hint = f"; {rpb_hint}" if rpb_hint and any(key.endswith(".rpb") for key in missing) else ""
    return (
        f"{owner}: the checkpoint has no value for {len(missing)} of {total} backbone "
        f"tensors ({shown}){hint}"
    )


def refuse_missing_weights(
    owner: str,
    missing: list[str],
    total: int,
    option: str,
    allowed: bool = False,
    rpb_hint: str = "",
    log: Optional[logging.Logger] = None,
    location: str = "",
) -> Optional[str]:
    """:func:`missing_weights_error` with its outcome decided, for a framework's checkpointer.

    Args:
        owner: Name of the model (or its prefix), for the messages.
        missing: Missing keys, relative to the backbone.
        total: Number of backbone tensors.
        option: The setting that allows missing weights (named in the refusal).
        allowed: That setting's value: log a warning instead of refusing.
        rpb_hint: See :func:`missing_weights_error`.
        log: Logger (default: this module's).
        location: Where the backbone sits (e.g. its state-dict prefix ``backbone.``),
            for the INFO line about fresh norms (default: ``owner``).

    Returns:
        The refusal to raise (or hand to the framework), or ``None``: loading goes on,
        having logged fresh dense-output norms at INFO and allowed gaps at WARNING.
    """
    log = log or logger
    message = missing_weights_error(owner, missing, total, rpb_hint)
    if message and not allowed:
        return f"{message}. Set {option} True to train them from their random initialisation."
    if message:
        log.warning("%s (allowed by %s)", message, option)
    elif missing:  # ImageNet weights have no norm0..3: they start fresh, as everywhere
        log.info("%s: new dense-output norms %s initialised fresh", location or owner, missing)
    return None
