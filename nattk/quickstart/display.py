"""What a person sees of one quickstart task while the runner works: progress bars.

:class:`TrainingDisplay` is the listener of :class:`~nattk.openmmlab.progress_hook.
ProgressHook`: it draws a bar for every evaluation (the untrained one and those during
training) and one for training, whose ETA counts the evaluations still to come, and it
records every evaluation's metrics for the metric curve.
"""

from __future__ import annotations

import time
from typing import Optional, TextIO

from nattk.quickstart.progress import LABEL, ProgressBar, format_duration


def phase_line(stream: TextIO, label: str, text: str) -> None:
    """Writes one ``  <label> <text>`` line."""
    stream.write(f"  {label:<{LABEL}} {text}\n")
    stream.flush()


class TrainingDisplay:
    """Progress bars of evaluation and training, and the evaluations' record.

    Args:
        stream: The console.
        metric: Key of the reported metric in the evaluator's results.
        label: How the metric is called on the console.
        scale: Factor from the evaluator's value to a fraction (0.01 for percent).
        eval_points: Training iterations after which the train loop evaluates.
    """

    def __init__(
        self, stream: TextIO, metric: str, label: str, scale: float, eval_points: list[int]
    ) -> None:
        self.stream = stream
        self.metric, self.label, self.scale = metric, label, scale
        self.eval_points = list(eval_points)
        #: One entry per evaluation: ``{"iter", "score", "metrics"}``.
        self.evaluations: list[dict] = []
        self._train: Optional[ProgressBar] = None
        self._val: Optional[ProgressBar] = None
        self._val_start = 0.0
        self._eval_seconds: Optional[float] = None  # the latest evaluation's duration
        self._eval_seconds_in_training = 0.0

    def score(self, metrics: dict) -> float:
        """The reported metric of ``metrics`` as a fraction.

        MMDetection's ``CocoMetric`` returns no metrics when the model detected nothing
        in the whole split; the score is then 0, as COCO AP of no detections is.
        """
        return metrics.get(self.metric, 0.0) * self.scale

    def train_iter(self, done: int, total: int, loss: Optional[float]) -> None:
        """Advances the training bar; ends it after the last iteration."""
        if self._train is None:
            self._train = ProgressBar("train", total, "iters", self.stream, plain_lines=9)
        note = "" if loss is None else f"loss {loss:.3f}"
        if done >= total:
            self._train.finish(note)
        else:
            self._train.update(done, note, eta=self._train_eta(done, total))

    def _train_eta(self, done: int, total: int) -> float:
        """Iterations left at the training pace, plus the evaluations still to come."""
        seconds = max(0.0, self._train.elapsed - self._eval_seconds_in_training)
        evaluations_left = sum(1 for point in self.eval_points if point > done)
        return seconds / done * (total - done) + evaluations_left * (self._eval_seconds or 0.0)

    def val_begin(self, total: int, at_iter: int) -> None:
        """Starts an evaluation's bar (``untrained`` before training)."""
        if self._train is not None:
            self._train.interrupt()
        label = f"eval {at_iter}" if self._train is not None else "untrained"
        self._val = ProgressBar(label, total, "batches", self.stream)
        self._val_start = time.perf_counter()

    def val_iter(self, done: int, total: int) -> None:
        """Advances the evaluation's bar."""
        if self._val is not None:
            self._val.update(done)

    def val_end(self, metrics: dict, at_iter: int) -> None:
        """Ends the evaluation's bar with its score and records the evaluation."""
        score = self.score(metrics)
        if self._val is not None:
            empty = "" if self.metric in metrics else " (nothing detected)"
            self._val.finish(f"{self.label} {score:.3f}{empty}")
        self._eval_seconds = time.perf_counter() - self._val_start
        if self._train is not None:
            self._eval_seconds_in_training += self._eval_seconds
        self.evaluations.append(dict(iter=at_iter, score=score, metrics=metrics))


def seconds_text(seconds: float) -> str:
    """``12.3 s`` below a minute, ``m:ss`` above."""
    return f"{seconds:.1f} s" if seconds < 60 else format_duration(seconds)
