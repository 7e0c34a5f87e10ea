"""One-line errors for the command-line tools.

A mistake in what a user gave a tool (a file that does not exist, a value the toolkit
refuses, a registry name with a typo) ends the run with ``error: <message>`` on stderr
and exit status 2, as argparse does, instead of a traceback whose last line is the only
useful one. ``--debug`` (anywhere on the command line) or ``NATTK_DEBUG=1`` shows the
traceback. Anything else, a bug included, keeps its traceback.

Every ``tools/*.py`` entry point for users runs its ``main`` through :func:`run_tool`.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Optional, Sequence

#: Exit status of a refused input (argparse's own for a bad command line).
USER_ERROR_STATUS = 2


class NattkError(Exception):
    """Base class of this toolkit's own errors about its input (shown in one line).

    Its message is written for the terminal: its lines are kept. An error class of a
    lower layer (which must not import this module) opts into the same by a class
    attribute ``keeps_lines = True`` (e.g. ``nattk.openmmlab.strict_load``'s).
    """

    keeps_lines = True


#: What the toolkit raises for bad input: a value refused, a path that is not there or
#: is the wrong kind. ``KeyError`` only for registry misses (see :func:`user_message`).
USER_ERRORS = (
    NattkError,  # and any error with keeps_lines (see NattkError)
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def user_message(error: BaseException) -> Optional[str]:
    """The one-line message for an error about the user's input, or ``None`` for others."""
    if isinstance(error, KeyError):
        # MMEngine's "<name> is not in the <scope>::<registry> registry"; a KeyError from
        # anywhere else is a bug and keeps its traceback.
        text = str(error.args[0]) if error.args else ""
        return text if "registry" in text else None
    if getattr(error, "keeps_lines", False):  # written for the terminal: lines are kept
        return str(error).strip() or type(error).__name__
    if isinstance(error, USER_ERRORS):
        text = str(error).strip()
        if isinstance(error, OSError) and error.filename and error.strerror:
            text = f"{error.strerror}: {error.filename}"
        return " ".join(text.split()) or type(error).__name__
    return None


def debug_requested(argv: Sequence[str]) -> bool:
    return "--debug" in argv or os.environ.get("NATTK_DEBUG", "") not in ("", "0")


def run_tool(main: Callable, argv: Optional[Sequence[str]] = None) -> int:
    """Runs ``main(argv)`` and returns the exit status for ``sys.exit``.

    ``--debug`` is taken out of ``argv`` (default ``sys.argv[1:]``) before ``main`` sees
    it. A user error prints ``error: ...`` on stderr and returns 2, unless debugging.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != "--debug"]
    try:
        status = main(argv)
    except Exception as error:
        message = None if debug else user_message(error)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return USER_ERROR_STATUS
    return status if isinstance(status, int) else 0
