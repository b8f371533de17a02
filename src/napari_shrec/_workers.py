"""Run core functions off the GUI thread: the ONLY module of napari-shrec that starts threads.

A core function takes ``progress=`` (a :data:`~napari_shrec.core.progress.ProgressCallback`
``(done, total, message)``) and ``cancel=`` (a :class:`~napari_shrec.core.progress.CancelToken`)
keyword arguments (or is a generator function yielding ``(done, total, message)`` and returning
its result). A :class:`TaskRunner` (one per widget) runs such a function:

- in a worker thread (a task on Qt's global ``QThreadPool``). Progress calls made
  in the worker thread are forwarded to the main thread through a queued Qt signal (at most one
  every ``min_progress_interval_s`` seconds, plus the first and the last) and drive a
  ``napari.utils.progress`` bar (determinate with ``total > 0``, indeterminate with 0) and any
  ``progressed`` listeners (e.g. :class:`napari_shrec.widgets._task_status.TaskStatusWidget`);
- ``on_result(value)``, ``on_error(exc)`` and ``on_cancelled()`` are called in the main thread;
  an exception they raise is logged and shown as a napari notification, never propagated (in a
  Qt slot it would abort the process under PyQt), and the runner is idle all the same;
- starting a task cancels the one running, and results, errors and progress of stale tasks are
  dropped (each task has a generation number; only the newest one reports);
- a :class:`~napari_shrec.core.progress.Cancelled` exception, or a result of a task whose token
  was cancelled, counts as *cancelled*, never as an error.

For tests (and scripts without an event loop) threading can be switched off: with the
environment variable ``NAPARI_SHREC_NO_THREADS=1`` or :func:`set_threading(False)
<set_threading>` the function runs synchronously in the calling thread, with the same callbacks
in the same order, before :meth:`TaskRunner.start` returns.

Qt is imported only when a threaded task starts (through qtpy).
"""

from __future__ import annotations

import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core.progress import Cancelled, CancelToken

__all__ = [
    "TaskRunner",
    "Callbacks",
    "set_threading",
    "threading_enabled",
    "NO_THREADS_ENV",
]

log = logging.getLogger(__name__)

NO_THREADS_ENV = "NAPARI_SHREC_NO_THREADS"
#: How much "nicer" (Linux scheduling) a worker thread is than the GUI thread; threads the work
#: starts (thread pools, FFT workers) inherit it. 0 = as nice as the GUI thread.
WORKER_NICE_ENV = "NAPARI_SHREC_WORKER_NICE"
DEFAULT_WORKER_NICE = 5
_threading_override: bool | None = None


def set_threading(enabled: bool | None) -> None:
    """Run tasks in worker threads (True), synchronously (False), or as the environment says
    (None: threads unless ``NAPARI_SHREC_NO_THREADS`` is 1/true/yes)."""
    global _threading_override
    _threading_override = None if enabled is None else bool(enabled)


def threading_enabled() -> bool:
    """Whether :class:`TaskRunner` starts worker threads (see :func:`set_threading`)."""
    if _threading_override is not None:
        return _threading_override
    return os.environ.get(NO_THREADS_ENV, "").strip().lower() not in ("1", "true", "yes", "on")


class Callbacks:
    """A minimal signal: ``connect(fn)``, ``disconnect(fn)``, ``emit(*args)`` (main thread only).

    An exception in one listener is logged and does not stop the others."""

    def __init__(self) -> None:
        self._listeners: list[Callable[..., Any]] = []

    def connect(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if fn not in self._listeners:
            self._listeners.append(fn)
        return fn

    def disconnect(self, fn: Callable[..., Any] | None = None) -> None:
        """Remove ``fn`` (all listeners when None); unknown functions are ignored."""
        if fn is None:
            self._listeners.clear()
        elif fn in self._listeners:
            self._listeners.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._listeners):
            try:
                fn(*args)
            except Exception:  # a broken listener must not break the runner
                log.exception("napari-shrec task listener %r failed", fn)


@dataclass
class _Task:
    generation: int
    description: str
    token: CancelToken
    on_result: Callable[[Any], None] | None
    on_error: Callable[[BaseException], None] | None
    on_cancelled: Callable[[], None] | None
    on_progress: Callable[[int, int, str], None] | None
    pbar: Any = None
    last_desc: str = ""


class TaskRunner:
    """Runs one core function at a time for a widget, off the GUI thread.

    Args:
        napari_progress: show a ``napari.utils.progress`` bar (napari's activity dock) while a
            task runs; False for no bar (the :class:`TaskStatusWidget` still works).
        min_progress_interval_s: throttle for progress forwarded from a worker thread (the
            first and the final report always pass).

    Signals (:class:`Callbacks`, called in the main thread):
        busy_changed(busy: bool)
        started(description: str)
        progressed(done: int, total: int, message: str)
        cancel_requested() — :meth:`cancel` was called; the task stops at its next step.
        finished(outcome: str, message: str) — outcome "done", "cancelled" or "error".

    Example::

        runner = TaskRunner()
        runner.start(reconstruct, tilt_series, params, on_result=self._show,
                     description="Reconstructing")
        ...
        runner.cancel()
    """

    def __init__(self, *, napari_progress: bool = True,
                 min_progress_interval_s: float = 0.05) -> None:
        self.napari_progress = bool(napari_progress)
        self.min_progress_interval_s = float(min_progress_interval_s)
        self.busy_changed = Callbacks()
        self.started = Callbacks()
        self.progressed = Callbacks()
        self.finished = Callbacks()
        self.cancel_requested = Callbacks()
        self._generation = 0
        self._current: _Task | None = None
        self._busy = False
        self._bridge: Any = None  # _Bridge QObject, made on the first threaded task

    # ----------------------------------------------------------------------------- public API
    @property
    def busy(self) -> bool:
        """True from :meth:`start` until the current task finished (or its cancellation took
        effect)."""
        return self._busy

    @property
    def description(self) -> str:
        """Description of the current (or last) task."""
        return self._current.description if self._current is not None else ""

    @property
    def cancelling(self) -> bool:
        """True while the current task was asked to cancel but has not stopped yet."""
        return self._busy and self._current is not None and self._current.token.cancelled

    def start(self, func: Callable[..., Any], *args: Any,
              on_result: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_cancelled: Callable[[], None] | None = None,
              on_progress: Callable[[int, int, str], None] | None = None,
              description: str = "", **kwargs: Any) -> int:
        """Run ``func(*args, progress=…, cancel=…, **kwargs)``; cancel the task running before.

        Args:
            func: a core function accepting ``progress`` and ``cancel`` keyword arguments.
            *args, **kwargs: its arguments.
            on_result: called with the return value (main thread).
            on_error: called with the exception (main thread); default: shown as a napari
                notification (logged when napari is not running).
            on_cancelled: called when the task stopped because it was cancelled.
            on_progress: called with ``(done, total, message)`` (main thread).
            description: shown in the progress bar and the status widget.

        Returns:
            The task's generation number (increases with every start).
        """
        if "progress" in kwargs or "cancel" in kwargs:
            raise TypeError("TaskRunner.start sets progress= and cancel= itself")
        previous = self._current
        if previous is not None and self._busy:
            previous.token.cancel()
            self._close_pbar(previous)
        self._generation += 1  # start() runs in the main thread only
        generation = self._generation
        task = _Task(generation=generation, description=description or _func_name(func),
                     token=CancelToken(), on_result=on_result, on_error=on_error,
                     on_cancelled=on_cancelled, on_progress=on_progress)
        self._current = task
        task.pbar = self._open_pbar(task)
        self._set_busy(True)
        self.started.emit(task.description)
        if threading_enabled():
            self._start_threaded(task, func, args, kwargs)
        else:
            self._run_sync(task, func, args, kwargs)
        return generation

    def cancel(self) -> None:
        """Ask the current task to stop. It stops at its next progress step; its result, if
        any, is dropped and ``on_cancelled`` is called. No-op when idle."""
        task = self._current
        if task is None or not self._busy or task.token.cancelled:
            return
        task.token.cancel()
        if task.pbar is not None:
            try:
                task.pbar.set_description(f"{task.description} (cancelling…)")
            except Exception:
                log.debug("could not update the progress bar", exc_info=True)
        self.cancel_requested.emit()

    def wait(self, timeout_s: float = 10.0) -> bool:
        """Block (processing Qt events) until idle; True if idle before ``timeout_s``. For tests
        and scripts; widgets should use the callbacks instead."""
        deadline = time.monotonic() + timeout_s
        app = None
        if self._busy and threading_enabled():
            from qtpy.QtWidgets import QApplication

            app = QApplication.instance()
        while self._busy and time.monotonic() < deadline:
            if app is not None:
                app.processEvents()
            time.sleep(0.005)
        return not self._busy

    # ----------------------------------------------------------------------------- running
    def _run_sync(self, task: _Task, func: Callable[..., Any], args: tuple,
                  kwargs: dict[str, Any]) -> None:
        def progress(done: int, total: int, message: str = "") -> None:
            self._on_progress(task.generation, done, total, message)

        try:
            result = _call(func, args, kwargs, progress, task.token)
        except BaseException as exc:  # noqa: BLE001 - forwarded to on_error / on_cancelled
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._on_done(task.generation, False, exc)
            return
        self._on_done(task.generation, True, result)

    def _start_threaded(self, task: _Task, func: Callable[..., Any], args: tuple,
                        kwargs: dict[str, Any]) -> None:
        from qtpy.QtCore import QThreadPool

        bridge = self._ensure_bridge()
        generation = task.generation
        interval = self.min_progress_interval_s
        state = {"last": 0.0, "first": True}

        def progress(done: int, total: int, message: str = "") -> None:
            now = time.monotonic()
            final = total > 0 and done >= total
            if not (state["first"] or final or now - state["last"] >= interval):
                return
            state["first"] = False
            state["last"] = now
            _safe_emit(bridge.progressed, generation, done, total, message)

        def work() -> None:
            # nothing may escape: PyQt aborts the process on an exception left unhandled here
            restore = _lower_thread_priority()
            try:
                try:
                    result = _call(func, args, kwargs, progress, task.token)
                except Exception as exc:  # noqa: BLE001 - forwarded to the main thread
                    _safe_emit(bridge.done, generation, False, exc)
                    return
                _safe_emit(bridge.done, generation, True, result)
            except BaseException:  # noqa: BLE001
                log.exception("napari-shrec worker thread failed")
            finally:
                restore()

        # A plain QThreadPool task. (superqt's/napari's workers replace the process-wide
        # warnings.showwarning while they run, which is not thread-safe: a warning shown in the
        # main thread meanwhile is captured by the worker, or recurses when relayed back.)
        QThreadPool.globalInstance().start(work)

    def _ensure_bridge(self) -> Any:
        if self._bridge is None:
            self._bridge = _make_bridge(self._on_progress, self._on_done)
        return self._bridge

    # ----------------------------------------------------------------------------- main thread
    def _is_current(self, generation: int) -> bool:
        return self._current is not None and self._current.generation == generation

    def _on_progress(self, generation: int, done: Any, total: Any, message: Any) -> None:
        if not self._is_current(generation):
            return  # a stale task: dropped
        task = self._current
        assert task is not None
        done_i, total_i, text = int(done), int(total), str(message or "")
        self._update_pbar(task, done_i, total_i, text)
        # Updating napari's progress bar processes pending Qt events, which may deliver this
        # task's "done" (or start another task): announcing this older progress afterwards
        # would overwrite the final status.
        if not (self._busy and self._is_current(generation)):
            return
        if task.on_progress is not None:
            try:
                task.on_progress(done_i, total_i, text)
            except Exception:
                log.exception("on_progress callback failed")
        self.progressed.emit(done_i, total_i, text)

    def _on_done(self, generation: int, ok: bool, payload: Any) -> None:
        if not self._is_current(generation):
            return  # a stale task: its result or error is dropped
        task = self._current
        assert task is not None
        self._close_pbar(task)
        cancelled = task.token.cancelled or (not ok and isinstance(payload, Cancelled))
        self._set_busy(False)
        # This runs inside a Qt slot when threads are on: an exception escaping a callback would
        # abort the process under PyQt, so each callback is guarded and its error reported.
        if cancelled:
            self.finished.emit("cancelled", "Cancelled")
            if task.on_cancelled is not None:
                _guarded(task.on_cancelled, (), "on_cancelled", task.description)
        elif ok:
            self.finished.emit("done", "Done")
            if task.on_result is not None:
                _guarded(task.on_result, (payload,), "on_result", task.description)
        else:
            self.finished.emit("error", f"Failed: {payload}")
            if task.on_error is not None:
                _guarded(task.on_error, (payload,), "on_error", task.description)
            else:
                _report_error(payload, task.description)

    def _set_busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._busy = busy
            self.busy_changed.emit(busy)

    # ----------------------------------------------------------------------------- napari bar
    def _open_pbar(self, task: _Task) -> Any:
        if not self.napari_progress:
            return None
        try:
            from napari.utils import progress
        except ImportError:
            return None
        try:
            return progress(total=0, desc=task.description)
        except Exception:
            log.debug("could not open a napari progress bar", exc_info=True)
            return None

    def _update_pbar(self, task: _Task, done: int, total: int, message: str) -> None:
        pbar = task.pbar
        if pbar is None:
            return
        try:
            if total != pbar.total:
                pbar.total = max(int(total), 0)
            delta = max(int(done), 0) - int(pbar.n)
            if delta:
                pbar.update(delta)
            desc = f"{task.description}: {message}" if message else task.description
            if desc != task.last_desc:
                task.last_desc = desc
                pbar.set_description(desc)
        except Exception:
            log.debug("could not update the progress bar", exc_info=True)

    def _close_pbar(self, task: _Task) -> None:
        pbar, task.pbar = task.pbar, None
        if pbar is not None:
            try:
                pbar.close()
            except Exception:
                log.debug("could not close the progress bar", exc_info=True)


# ---------------------------------------------------------------------------------------------
# Qt plumbing (imported lazily)
# ---------------------------------------------------------------------------------------------
_BRIDGE_CLASS: Any = None


def _make_bridge(on_progress: Callable[..., None], on_done: Callable[..., None]) -> Any:
    """A QObject living in the calling (main) thread whose signals, emitted from a worker
    thread, are delivered in the main thread (queued connections). The class is built once,
    on first use, so that Qt is imported only when a threaded task starts."""
    global _BRIDGE_CLASS
    if _BRIDGE_CLASS is None:
        from qtpy.QtCore import QObject, Signal, Slot

        class _Bridge(QObject):
            progressed = Signal(int, object, object, object)
            done = Signal(int, bool, object)

            def __init__(self, on_progress: Callable[..., None],
                         on_done: Callable[..., None]) -> None:
                super().__init__()
                self._on_progress = on_progress
                self._on_done = on_done
                self.progressed.connect(self._relay_progress)
                self.done.connect(self._relay_done)

            @Slot(int, object, object, object)
            def _relay_progress(self, generation: int, done: Any, total: Any,
                                message: Any) -> None:
                self._on_progress(generation, done, total, message)

            @Slot(int, bool, object)
            def _relay_done(self, generation: int, ok: bool, payload: Any) -> None:
                self._on_done(generation, ok, payload)

        _BRIDGE_CLASS = _Bridge
    return _BRIDGE_CLASS(on_progress, on_done)


def _call(func: Callable[..., Any], args: tuple, kwargs: dict[str, Any],
          progress: Callable[[int, int, str], None], token: CancelToken) -> Any:
    """Call a core function with ``progress``/``cancel``; or drive a generator function.

    A generator function is called without ``progress``/``cancel``; each value it yields that
    is a ``(done, total[, message])`` tuple is a progress report, the token is checked between
    yields (raising :class:`Cancelled`), and its ``return`` value is the result."""
    if not inspect.isgeneratorfunction(func):
        return func(*args, progress=progress, cancel=token, **kwargs)
    gen = func(*args, **kwargs)
    try:
        while True:
            token.raise_if_cancelled()
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            if isinstance(item, tuple) and len(item) in (2, 3):
                progress(int(item[0]), int(item[1]), str(item[2]) if len(item) == 3 else "")
    finally:
        gen.close()


def worker_nice() -> int:
    """The niceness increment of worker threads (``NAPARI_SHREC_WORKER_NICE``, default
    :data:`DEFAULT_WORKER_NICE`; 0 turns it off)."""
    text = os.environ.get(WORKER_NICE_ENV, "").strip()
    try:
        return max(0, min(int(text), 19)) if text else DEFAULT_WORKER_NICE
    except ValueError:
        log.warning("%s=%r is not an integer; using %d", WORKER_NICE_ENV, text,
                    DEFAULT_WORKER_NICE)
        return DEFAULT_WORKER_NICE


def _lower_thread_priority() -> Callable[[], None]:
    """Make the calling (worker) thread nicer than the GUI thread, so that the event loop
    keeps its share of the CPU while the work uses every core (Linux: niceness is per thread
    and inherited by the threads it starts; elsewhere nothing happens). Returns a function that
    puts the old niceness back where the system allows it (an unprivileged process may not
    lower niceness again: the pool thread then stays nicer until it expires)."""
    increment = worker_nice()
    setpriority = getattr(os, "setpriority", None)
    if not increment or setpriority is None or not hasattr(os, "PRIO_PROCESS"):
        return lambda: None
    import sys
    import threading

    if not sys.platform.startswith("linux"):  # elsewhere PRIO_PROCESS means the whole process
        return lambda: None
    tid = threading.get_native_id()
    try:
        old = os.getpriority(os.PRIO_PROCESS, tid)
        setpriority(os.PRIO_PROCESS, tid, min(old + increment, 19))
    except OSError:
        log.debug("could not lower the worker thread's priority", exc_info=True)
        return lambda: None

    def restore() -> None:
        try:
            setpriority(os.PRIO_PROCESS, tid, old)
        except OSError:
            pass

    return restore


def _safe_emit(signal: Any, *args: Any) -> None:
    try:
        signal.emit(*args)
    except RuntimeError:  # the bridge was deleted (widget closed): nobody is listening
        log.debug("napari-shrec task finished after its runner was deleted")


def _report_error(exc: BaseException, description: str) -> None:
    try:
        from napari.utils.notifications import notification_manager
    except ImportError:
        log.error("%s failed: %s", description, exc, exc_info=exc)
        return
    try:
        notification_manager.receive_error(type(exc), exc, exc.__traceback__)
    except Exception:  # reporting must never raise out of a Qt slot
        log.exception("could not show the error of %s as a napari notification", description)


def _guarded(callback: Callable[..., Any], args: tuple, what: str, description: str) -> None:
    """Call a task callback; an exception is logged and shown as a napari notification instead
    of escaping (inside a Qt slot, PyQt would abort the process)."""
    try:
        callback(*args)
    except Exception as exc:
        log.exception("%s callback of %s failed", what, description)
        _report_error(exc, description)


def _func_name(func: Callable[..., Any]) -> str:
    return getattr(func, "__name__", None) or type(func).__name__
