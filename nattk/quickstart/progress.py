"""Plain-text progress bars with elapsed time and ETA, for a person watching a console.

On a terminal a bar redraws itself in place; anywhere else (a pipe, a file, a CI log)
it writes a few lines only (``plain_lines`` of them, evenly spread, plus the last one),
so captured output stays short.

Example::

    bar = ProgressBar("train", total=600, unit="iters", stream=sys.stdout)
    for i in range(600):
        ...
        bar.update(i + 1, note=f"loss {loss:.3f}")
    bar.finish("done")
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO

WIDTH = 24  # characters of the bar itself
LABEL = 10  # the phase name is padded to this width


def format_duration(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a non-negative number of seconds."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """One phase of work with a known number of steps.

    Args:
        label: Name of the phase, shown first.
        total: Number of steps; at least 1.
        unit: What a step is (``"images"``, ``"iters"``).
        stream: Where to write; the bar redraws in place when it is a terminal.
        plain_lines: Lines written before the last one when ``stream`` is not a terminal
            (at evenly spaced fractions of ``total``).
        clock: Seconds since some fixed point (for tests); ``time.perf_counter``.
    """

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "",
        stream: Optional[TextIO] = None,
        plain_lines: int = 0,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.label = label
        self.total = max(1, int(total))
        self.unit = unit
        self.stream = stream if stream is not None else sys.stdout
        self.clock = clock
        self.start = clock()
        self.done = 0
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.plain_lines = max(0, int(plain_lines))
        self._last_slot = 0
        self._drawn = False

    @property
    def elapsed(self) -> float:
        """Seconds since the bar was created."""
        return self.clock() - self.start

    def eta(self) -> Optional[float]:
        """Seconds left at the average pace so far; ``None`` before the first step."""
        if self.done <= 0:
            return None
        return self.elapsed / self.done * (self.total - self.done)

    def line(self, note: str = "", eta: Optional[float] = None) -> str:
        """The bar as text: label, bar, count, elapsed time, ETA and ``note``."""
        filled = WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (WIDTH - filled)
        count = f"{self.done}/{self.total}" + (f" {self.unit}" if self.unit else "")
        timing = format_duration(self.elapsed)
        eta = self.eta() if eta is None else eta
        if self.done < self.total and eta is not None:
            timing += f", ETA {format_duration(eta)}"
        text = f"  {self.label:<{LABEL}} [{bar}] {count}  {timing}"
        return text + (f"  {note}" if note else "")

    def update(self, done: int, note: str = "", eta: Optional[float] = None) -> None:
        """Records that ``done`` steps are complete and redraws when it is useful.

        Args:
            done: Steps completed so far.
            note: Short text after the timing (e.g. the current loss).
            eta: Seconds left, when the caller knows better than the average pace.
        """
        self.done = min(max(0, int(done)), self.total)
        if self.interactive:
            self._write("\r" + self.line(note, eta) + "\x1b[K")
            return
        slot = (self.plain_lines + 1) * self.done // self.total
        if slot > self._last_slot and self.done < self.total:
            self._last_slot = slot
            self._write(self.line(note, eta) + "\n")

    def finish(self, note: str = "") -> None:
        """Marks every step done and ends the bar's line with ``note``."""
        self.done = self.total
        prefix = "\r" if self.interactive else ""
        self._write(prefix + self.line(note) + ("\x1b[K" if self.interactive else "") + "\n")
        self._drawn = False

    def interrupt(self) -> None:
        """Ends the bar's current line so that other text can follow (terminal only)."""
        if self.interactive and self._drawn:
            self._write("\n")
            self._drawn = False

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._drawn = not text.endswith("\n")
