"""Progress reporting and cancellation for long-running core functions.

Core functions never import a GUI toolkit. They take two optional arguments:

- ``progress``: a :data:`ProgressCallback` ``(done, total, message) -> None`` called from the
  thread doing the work (the CLI draws a tqdm bar, the napari widgets a progress bar);
- ``cancel``: a :class:`CancelToken`; the function checks it between steps and raises
  :class:`Cancelled`, leaving no half-written output behind.

:class:`ProgressReporter` bundles both so a core function needs one line per step.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["ProgressCallback", "CancelToken", "Cancelled", "ProgressReporter", "StagedProgress"]

ProgressCallback = Callable[[int, int, str], None]
"""``progress(done, total, message)``: ``done`` of ``total`` steps finished; ``total`` may be 0
when unknown."""


class Cancelled(Exception):
    """Raised inside a core function when its :class:`CancelToken` was cancelled."""


class CancelToken:
    """A thread-safe flag a caller sets to ask a running core function to stop."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class ProgressReporter:
    """Counts steps, forwards them to a callback and checks for cancellation at each step.

    >>> reporter = ProgressReporter(total=3, progress=None, cancel=None)
    >>> reporter.advance("read")  # checks the token, then reports (1, 3, "read")
    """

    def __init__(
        self,
        total: int,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.total = int(total)
        self.done = 0
        self._progress = progress
        self._cancel = cancel

    def check(self) -> None:
        """Raise :class:`Cancelled` if cancellation was asked for."""
        if self._cancel is not None:
            self._cancel.raise_if_cancelled()

    def advance(self, message: str = "", steps: int = 1) -> None:
        """Mark ``steps`` more steps done (checks cancellation first)."""
        self.check()
        self.done = min(self.done + steps, self.total) if self.total else self.done + steps
        if self._progress is not None:
            self._progress(self.done, self.total, message)

    def start(self, message: str = "") -> None:
        """Report 0 of ``total`` (so a progress bar appears before the first step ends)."""
        self.check()
        if self._progress is not None:
            self._progress(self.done, self.total, message)


class StagedProgress:
    """Maps each stage's own progress onto one overall bar: stage ``s`` owns ``weights[s]`` of the
    ``total = sum(weights)`` steps; ``callback(s)`` is the stage's own ``progress`` and
    ``finish(s)`` marks it done (pipelines such as a simulation or the demo)."""

    def __init__(self, progress: ProgressCallback | None, weights: dict[str, int]) -> None:
        self.progress = progress
        self.weights = weights
        self.total = sum(weights.values())
        self.done = 0

    def callback(self, stage: str) -> ProgressCallback | None:
        if self.progress is None:
            return None
        start, weight = self.done, self.weights[stage]
        outer = self.progress

        def report(done: int, total: int, message: str) -> None:
            fraction = done / total if total > 0 else 0.0
            outer(start + int(round(weight * min(fraction, 1.0))), self.total,
                  f"{stage}: {message}")

        return report

    def finish(self, stage: str) -> None:
        self.done += self.weights[stage]
        if self.progress is not None:
            self.progress(self.done, self.total, f"{stage}: done")
