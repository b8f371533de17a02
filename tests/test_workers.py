"""TaskRunner: threads on (worker thread, queued signals) and off (synchronous), cancel, stale
results, errors, the napari progress bar and the status widget."""

from __future__ import annotations

import threading
import time
import warnings

import pytest

pytest.importorskip("qtpy")
pytest.importorskip("pytestqt")

from napari_shrec import _workers  # noqa: E402
from napari_shrec._workers import TaskRunner, set_threading, threading_enabled  # noqa: E402
from napari_shrec.core.progress import CancelToken, ProgressReporter  # noqa: E402

pytestmark = pytest.mark.napari


def count_to(n: int, delay_s: float = 0.0, *, progress=None, cancel=None) -> int:
    """A core-style function: n steps, a progress report and a cancel check per step."""
    reporter = ProgressReporter(n, progress, cancel)
    reporter.start("begin")
    for i in range(n):
        time.sleep(delay_s)
        reporter.advance(f"step {i + 1}")
    return n


def ignores_cancel(value: str, delay_s: float, *, progress=None, cancel=None) -> str:
    """A function that never checks its token: only the generation counter can drop its result."""
    time.sleep(delay_s)
    return value


def fails(*, progress=None, cancel=None):
    raise ValueError("boom")


def returns_thread(*, progress=None, cancel=None) -> str:
    return threading.current_thread().name


class Recorder:
    def __init__(self, runner: TaskRunner | None = None) -> None:
        self.results: list = []
        self.errors: list = []
        self.cancelled = 0
        self.progress: list[tuple[int, int, str]] = []
        self.busy: list[bool] = []
        if runner is not None:
            runner.busy_changed.connect(self.busy.append)

    def kwargs(self) -> dict:
        return {
            "on_result": self.results.append,
            "on_error": self.errors.append,
            "on_cancelled": self._cancelled,
            "on_progress": lambda d, t, m: self.progress.append((d, t, m)),
        }

    def _cancelled(self) -> None:
        self.cancelled += 1


@pytest.fixture(params=[True, False], ids=["threads", "no-threads"])
def threads(request, qtbot):
    set_threading(request.param)
    yield request.param
    set_threading(None)
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(5000)


@pytest.fixture
def runner(qtbot):
    return TaskRunner(napari_progress=False, min_progress_interval_s=0.0)


def _wait_idle(qtbot, runner: TaskRunner, timeout_ms: int = 5000) -> None:
    qtbot.waitUntil(lambda: not runner.busy, timeout=timeout_ms)


def test_result_and_progress_in_order(qtbot, threads, runner):
    rec = Recorder(runner)
    runner.start(count_to, 5, description="counting", **rec.kwargs())
    _wait_idle(qtbot, runner)
    assert rec.results == [5]
    assert rec.errors == [] and rec.cancelled == 0
    assert rec.progress == [(0, 5, "begin")] + [(i, 5, f"step {i}") for i in range(1, 6)]
    assert rec.busy == [True, False]


def test_threads_switch_decides_where_the_function_runs(qtbot, threads, runner):
    rec = Recorder()
    runner.start(returns_thread, **rec.kwargs())
    _wait_idle(qtbot, runner)
    main = threading.current_thread().name
    if threads:
        assert rec.results and rec.results[0] != main
    else:
        assert rec.results == [main]  # ran synchronously, before start() returned


def test_cancel_stops_a_running_task(qtbot, threads, runner):
    rec = Recorder(runner)
    if threads:
        runner.start(count_to, 1000, 0.005, **rec.kwargs())
        qtbot.waitUntil(lambda: len(rec.progress) >= 3, timeout=5000)
        runner.cancel()
        assert runner.cancelling
    else:
        def cancel_at_three(done, total, message):
            rec.progress.append((done, total, message))
            if done == 3:
                runner.cancel()

        runner.start(count_to, 1000, on_result=rec.results.append, on_error=rec.errors.append,
                     on_cancelled=rec._cancelled, on_progress=cancel_at_three)
    _wait_idle(qtbot, runner)
    assert rec.cancelled == 1
    assert rec.results == [] and rec.errors == []  # Cancelled is not an error
    assert rec.progress[-1][0] < 1000
    assert rec.busy == [True, False]


def test_new_task_cancels_the_old_and_drops_its_result(qtbot, runner):
    set_threading(True)
    try:
        rec = Recorder()
        first_token: list[CancelToken] = []

        def slow(*, progress=None, cancel=None):
            first_token.append(cancel)
            return ignores_cancel("old", 0.3)

        runner.start(slow, **rec.kwargs())
        qtbot.waitUntil(lambda: bool(first_token), timeout=5000)
        runner.start(ignores_cancel, "new", 0.0, **rec.kwargs())
        _wait_idle(qtbot, runner)
        from qtpy.QtCore import QThreadPool

        # the old task finishes meanwhile; its result must not arrive
        assert QThreadPool.globalInstance().waitForDone(5000)
        qtbot.wait(50)  # deliver the queued signals of the old task
        assert rec.results == ["new"]
        assert first_token[0].cancelled  # the old task was asked to stop
        assert rec.cancelled == 0 and rec.errors == []  # stale tasks report nothing
    finally:
        set_threading(None)
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(5000)


def test_a_failing_callback_is_reported_and_leaves_the_runner_idle(qtbot, threads, runner,
                                                                   monkeypatch):
    """on_result / on_error run in a Qt slot when threads are on: an exception escaping them
    would abort the process under PyQt. It is logged and reported instead."""
    reported: list[tuple[BaseException, str]] = []
    monkeypatch.setattr(_workers, "_report_error",
                        lambda exc, description: reported.append((exc, description)))
    finished: list[str] = []
    runner.finished.connect(lambda outcome, msg: finished.append(outcome))

    def broken_on_result(value):
        raise RuntimeError(f"broken on_result got {value}")

    runner.start(count_to, 2, on_result=broken_on_result, description="counting")
    _wait_idle(qtbot, runner)
    qtbot.wait(20)
    assert not runner.busy and finished == ["done"]
    assert len(reported) == 1 and isinstance(reported[0][0], RuntimeError)
    assert str(reported[0][0]) == "broken on_result got 2" and reported[0][1] == "counting"

    def broken_on_error(exc):
        raise KeyError("broken on_error")

    runner.start(fails, on_error=broken_on_error, description="failing")
    _wait_idle(qtbot, runner)
    assert not runner.busy and finished == ["done", "error"]
    assert len(reported) == 2 and isinstance(reported[1][0], KeyError)
    # the runner still works afterwards
    rec = Recorder()
    runner.start(count_to, 3, **rec.kwargs())
    _wait_idle(qtbot, runner)
    assert rec.results == [3]


def test_errors_reach_on_error(qtbot, threads, runner):
    rec = Recorder(runner)
    finished: list[tuple[str, str]] = []
    runner.finished.connect(lambda outcome, msg: finished.append((outcome, msg)))
    runner.start(fails, **rec.kwargs())
    _wait_idle(qtbot, runner)
    assert len(rec.errors) == 1 and isinstance(rec.errors[0], ValueError)
    assert str(rec.errors[0]) == "boom"
    assert rec.results == [] and rec.cancelled == 0
    assert finished == [("error", "Failed: boom")]


def test_start_refuses_its_own_keywords(runner):
    with pytest.raises(TypeError, match="progress"):
        runner.start(count_to, 3, progress=print)


def test_environment_variable_switches_threads_off(monkeypatch):
    set_threading(None)
    monkeypatch.setenv(_workers.NO_THREADS_ENV, "1")
    assert threading_enabled() is False
    monkeypatch.setenv(_workers.NO_THREADS_ENV, "0")
    assert threading_enabled() is True
    set_threading(False)
    assert threading_enabled() is False
    set_threading(None)


def test_napari_progress_bar_follows_the_task(qtbot):
    pytest.importorskip("napari")
    from napari.utils import progress

    set_threading(False)
    try:
        runner = TaskRunner(napari_progress=True)
        seen: list[tuple[int, int, str]] = []

        def look(done, total, message):
            bars = [p for p in progress._all_instances if p.desc.startswith("napari-test-task")]
            assert len(bars) == 1
            seen.append((bars[0].n, bars[0].total, bars[0].desc.rstrip(": ")))

        runner.start(count_to, 3, on_progress=look, description="napari-test-task")
        assert seen[0][:2] == (0, 3)
        assert seen[-1] == (3, 3, "napari-test-task: step 3")
        assert not [p for p in progress._all_instances if p.desc.startswith("napari-test-task")]

        def unknown_total(*, progress=None, cancel=None):
            progress(5, 0, "working")  # total 0: indeterminate
            return True

        runner.start(unknown_total, on_progress=look, description="napari-test-task")
        assert seen[-1][1] == 0
    finally:
        set_threading(None)


def test_status_widget_shows_progress_and_cancels(qtbot):
    from napari_shrec.widgets._task_status import TaskStatusWidget

    set_threading(True)
    try:
        runner = TaskRunner(napari_progress=False, min_progress_interval_s=0.0)
        widget = TaskStatusWidget(runner)
        qtbot.addWidget(widget)
        assert not widget.cancel_button.isEnabled()
        rec = Recorder()
        runner.start(count_to, 1000, 0.005, description="Counting", **rec.kwargs())
        qtbot.waitUntil(lambda: widget.progress.maximum() == 1000
                        and widget.progress.value() >= 2, timeout=5000)
        assert widget.cancel_button.isEnabled()
        assert widget.status.text().startswith("Counting: step")
        widget.cancel_button.click()
        assert "cancelling" in widget.status.text()
        _wait_idle(qtbot, runner)
        assert widget.status.text() == "Cancelled"
        assert not widget.cancel_button.isEnabled()
        assert rec.cancelled == 1
    finally:
        set_threading(None)
        from qtpy.QtCore import QThreadPool

        QThreadPool.globalInstance().waitForDone(5000)


def test_warnings_in_the_worker_are_ordinary_warnings(qtbot):
    """Warnings from the worker thread go through Python's warnings machinery untouched (no
    process-wide showwarning swap that could capture or loop main-thread warnings)."""
    set_threading(True)
    try:
        runner = TaskRunner(napari_progress=False)

        def warns(*, progress=None, cancel=None):
            warnings.warn("careful: napari-shrec test warning", UserWarning, stacklevel=1)
            return 1

        done: list = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            runner.start(warns, on_result=done.append)
            _wait_idle(qtbot, runner)
            warnings.warn("napari-shrec main-thread warning", UserWarning, stacklevel=1)
        messages = [str(w.message) for w in caught]
        assert "careful: napari-shrec test warning" in messages
        assert "napari-shrec main-thread warning" in messages
        assert done == [1]
    finally:
        set_threading(None)


def counting_generator(n: int, delay_s: float = 0.0):
    """The other core style: yield (done, total, message), return the result."""
    for i in range(n):
        time.sleep(delay_s)
        yield (i + 1, n, f"item {i + 1}")
    return f"{n} items"


def test_generator_functions_report_progress_and_cancel(qtbot, threads, runner):
    rec = Recorder(runner)
    runner.start(counting_generator, 3, **rec.kwargs())
    _wait_idle(qtbot, runner)
    assert rec.results == ["3 items"]
    assert rec.progress == [(1, 3, "item 1"), (2, 3, "item 2"), (3, 3, "item 3")]

    rec = Recorder()

    def cancel_early(done, total, message):
        rec.progress.append((done, total, message))
        if done == 2:
            runner.cancel()

    runner.start(counting_generator, 500, 0.002, on_result=rec.results.append,
                 on_error=rec.errors.append, on_cancelled=rec._cancelled, on_progress=cancel_early)
    _wait_idle(qtbot, runner)
    assert rec.cancelled == 1 and rec.results == [] and rec.errors == []
    assert rec.progress[-1][0] < 500


def test_progress_delivered_after_done_does_not_overwrite_the_status(qtbot):
    """Updating napari's progress bar processes Qt events; if the task's "done" arrives in
    there, the older progress message must not be announced after it."""

    class ReentrantRunner(TaskRunner):
        def _update_pbar(self, task, done, total, message):
            if message == "step 2":  # the "done" event sneaks in while the bar repaints
                self._on_done(task.generation, True, "early")

    set_threading(False)
    try:
        runner = ReentrantRunner(napari_progress=False, min_progress_interval_s=0.0)
        events: list[str] = []
        runner.progressed.connect(lambda d, t, m: events.append(f"progress {m}"))
        runner.finished.connect(lambda state, text: events.append(f"finished {state}"))
        runner.start(count_to, 2)
        assert events[-1] == "finished done"
        assert "progress step 2" not in events
    finally:
        set_threading(None)
