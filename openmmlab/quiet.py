"""Keeps known-harmless framework messages out of the way; everything else is untouched.

Two kinds of noise open every MMDetection / MMSegmentation run of this toolkit:

* **Python warnings** about the frameworks' own internals (deprecated builders and
  arguments they still use themselves). :func:`ignore_harmless_warnings` ignores exactly
  those, matched by category, message and the module that warns.
* **Log records** at INFO/WARNING level that describe nothing the user chose or can
  act on, above all MMEngine's ``DefaultOptimWrapperConstructor``, which logs one
  ``paramwise_options -- <parameter>:<option>=<value>`` line per option of every
  parameter a ``paramwise_cfg`` touches (hundreds). :class:`DemoteToDebug` lowers those
  records to DEBUG: with the default ``log_level='INFO'`` they are neither shown nor
  written to the log file, with ``log_level='DEBUG'`` (``--cfg-options
  log_level=DEBUG``) each appears once, as a DEBUG line.
"""

from __future__ import annotations

import logging
import re
import warnings

#: ``(category, message regex, module regex)`` of warnings that need no action.
HARMLESS_WARNINGS = (
    # mmseg 1.2.2's decode heads build their losses with its own deprecated helper.
    (UserWarning, r"``build_loss`` would be deprecated soon", r"mmseg\.models\.builder"),
    # mmseg's CrossEntropyLoss states its (documented) default on every construction.
    (UserWarning, r"Default ``avg_non_ignore`` is False", r"mmseg\.models\.losses"),
    # mmseg's LoadAnnotations warns on reduce_zero_label although mmseg's own ADE20K
    # pipelines set it there; the quickstart config sets it on the dataset as well.
    (UserWarning, r"`reduce_zero_label` will be deprecated", r"mmseg\.datasets\.transforms"),
)

#: Regexes (``re.match`` on the formatted message) of log records lowered to DEBUG.
DEBUG_RECORDS = (
    r"paramwise_options -- ",
    # MMEngine's checkpoint/IO code still goes through its own deprecated FileClient.
    r'"FileClient" will be deprecated in future',
    r'"HardDiskBackend" is the alias of "LocalBackend"',
    # mmseg's IoUMetric is used without a metric prefix, as in mmseg's own configs.
    r"The prefix is not set in metric class IoUMetric",
)


class DemoteToDebug(logging.Filter):
    """A logger filter that turns records matching ``patterns`` into DEBUG records.

    Added to a logger (not a handler), it runs before the handlers' level checks, so
    a demoted record reaches only handlers at DEBUG level.

    Args:
        patterns: Regexes matched (``re.match``) against each record's message.
    """

    def __init__(self, patterns=DEBUG_RECORDS) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        """Lowers a matching INFO/WARNING record to DEBUG; never drops a record."""
        if logging.DEBUG < record.levelno < logging.ERROR:
            if self.pattern.match(record.getMessage()):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


def ignore_harmless_warnings() -> None:
    """Ignores the warnings of :data:`HARMLESS_WARNINGS` (and only those)."""
    for category, message, module in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def demote_noisy_records(logger: logging.Logger) -> None:
    """Adds one :class:`DemoteToDebug` filter to ``logger`` (a second call adds none)."""
    if not any(isinstance(f, DemoteToDebug) for f in logger.filters):
        logger.addFilter(DemoteToDebug())
