"""Run batch tasks on a dask.distributed cluster: one task per tomogram.

:func:`run_batch` checks every output first (finished ones are skipped, outputs that are not the
batch's are refused before any work), removes what interrupted attempts left, then submits each
remaining task to a ``distributed`` client — a :class:`distributed.LocalCluster` of
``n_workers`` single-threaded worker processes by default, or the scheduler at
``BatchParams.scheduler`` (``tcp://host:8786``: a dask-jobqueue SLURM/PBS cluster, a Kubernetes
deployment, ``dask scheduler`` + ``dask worker`` by hand). Each task limits its compute pools to
its share of the cores (:func:`~napari_shrec.batch.tasks.limit_threads`).

Failures: a task that raises is retried ``retries`` times (on any worker); a task whose worker
dies is rescheduled by the scheduler (up to its ``allowed-failures``, 3 by default). A task that
still fails is reported with its cause; the others go on. Outputs are idempotent (see
:mod:`napari_shrec.batch.provenance`), so a task run twice writes the same output once and a
resumed batch repeats nothing that finished.

Progress: workers publish start / progress / error events on a topic of the scheduler's event
log (``Worker.log_event``; the client subscribes); :func:`run_batch` hands them to ``on_event``
as :class:`BatchEvent` objects and reports overall ``progress(done, total, message)``, both in
the calling thread. Cancelling the ``cancel`` token cancels queued tasks and asks running ones to
stop at their next step (a ``distributed.Event``).

Files must be visible to the client and to every worker under the same paths (a shared file
system on a cluster). No napari or Qt here; dask is imported when a batch runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.progress import Cancelled, CancelToken, ProgressCallback
from .tasks import BatchTask, TaskResult, check_tasks, clean_partials, execute_task

__all__ = [
    "BatchParams",
    "BatchEvent",
    "TaskReport",
    "BatchReport",
    "run_batch",
    "local_cluster",
    "cpu_count",
    "START_METHODS",
    "default_start_method",
]

TaskStatus = Literal["pending", "running", "finished", "skipped", "failed", "cancelled"]


#: how a LocalCluster may start its workers (see :class:`BatchParams`)
START_METHODS: tuple[str, ...] = ("spawn", "fork")


def default_start_method() -> Literal["spawn", "fork"]:
    """The command line's start method: "fork" on Linux (workers start without importing
    anything again), else "spawn" (macOS frameworks are not fork-safe; Windows has no fork)."""
    return "fork" if sys.platform.startswith("linux") else "spawn"


@dataclass(frozen=True)
class BatchParams:
    """Where and how a batch runs.

    Attributes:
        scheduler: address of a running dask scheduler (``tcp://host:8786``); None starts a
            LocalCluster on this machine.
        n_workers: worker processes of the LocalCluster (ignored with ``scheduler``).
        threads_per_task: threads each task computes with (numba, FFT, BLAS, PyTorch). 0: the
            machine's cores divided by ``n_workers`` on a LocalCluster; on a remote cluster the
            cores a worker process sees divided by its threads.
        retries: extra attempts for a task that raised an error.
        progress_interval_s: least time between two progress events of one task.
        start_method: how the LocalCluster starts its worker processes: "spawn" (a fresh
            interpreter each, which imports everything again: about 1 s per batch on 2
            cores) or "fork" (a copy of this process, modules already imported; POSIX only,
            and only from a process without a GUI or a GPU context). Ignored with
            ``scheduler``.
    """

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_task: int = 0
    retries: int = 2
    progress_interval_s: float = 0.5
    start_method: Literal["spawn", "fork"] = "spawn"

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise ValueError(f"workers must be ≥ 1, got {self.n_workers}")
        if self.threads_per_task < 0:
            raise ValueError(f"threads per task must be ≥ 0, got {self.threads_per_task}")
        if self.retries < 0:
            raise ValueError(f"retries must be ≥ 0, got {self.retries}")
        if self.start_method not in START_METHODS:
            raise ValueError(f"start method must be one of {', '.join(START_METHODS)}, got "
                             f"{self.start_method!r}")
        if self.start_method == "fork" and not hasattr(os, "fork"):
            raise ValueError("start method 'fork' needs a POSIX system; use 'spawn'")


@dataclass(frozen=True)
class BatchEvent:
    """Something that happened to one task.

    Attributes:
        kind: "cluster" (the cluster is ready; ``message`` says where, index −1), "skipped"
            (already finished), "queued", "started" (an attempt began on
            ``worker``), "progress" (``done`` of ``total`` steps, ``message``), "error" (an
            attempt failed; it may be retried), "finished", "failed" (for good), "cancelled".
        index: the task's position in the list given to :func:`run_batch`.
        name: the task's name.
        attempt: the attempt this event belongs to (1 = first).
    """

    kind: str
    index: int
    name: str
    message: str = ""
    done: int = 0
    total: int = 0
    worker: str = ""
    attempt: int = 0


@dataclass
class TaskReport:
    """The outcome of one task.

    Attributes:
        status: "finished", "skipped" (was finished before), "failed" or "cancelled" (and
            "pending"/"running" while the batch runs).
        attempts: attempts started (a worker that died, or an error retried, adds one).
        message: summary line, or the cause of a failure.
        result: what the task returned (None unless finished or skipped).
    """

    task: BatchTask
    status: TaskStatus = "pending"
    attempts: int = 0
    message: str = ""
    worker: str = ""
    result: TaskResult | None = None

    @property
    def name(self) -> str:
        return self.task.name


@dataclass
class BatchReport:
    """Every task's outcome, in the order given."""

    tasks: list[TaskReport]
    elapsed_s: float = 0.0
    where: str = ""
    threads_per_task: int = 0
    cancelled: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def with_status(self, status: TaskStatus) -> list[TaskReport]:
        return [t for t in self.tasks if t.status == status]

    @property
    def ok(self) -> bool:
        """Every task finished (now or before)."""
        return all(t.status in ("finished", "skipped") for t in self.tasks)


def cpu_count() -> int:
    """Cores this process may run on (the scheduler affinity, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def fork_hazard() -> str | None:
    """Why forking this process would be unsafe, or None. A forked child inherits the state of
    an OpenMP runtime whose threads it does not have: numba's OpenMP layer then terminates the
    child at its first parallel loop, and GNU OpenMP may hang in it. So: not once numba's
    parallel threads have run here (e.g. a reconstruction), nor with PyTorch loaded."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None and getattr(parallel, "_is_initialized", False):
        return "numba's parallel threads have run in this process"
    if "torch" in sys.modules:
        return "PyTorch is loaded in this process"
    return None


def worker_start_method(requested: Literal["spawn", "fork"]) -> tuple[str, str | None]:
    """The start method a LocalCluster uses for ``requested``: "fork" only when
    :func:`fork_hazard` finds nothing, else "spawn"; and why fork was refused (or None)."""
    if requested != "fork":
        return requested, None
    hazard = fork_hazard()
    return ("spawn", hazard) if hazard else ("fork", None)


def local_cluster(n_workers: int, threads_per_task: int,
                  start_method: Literal["spawn", "fork"] = "spawn") -> Any:
    """A LocalCluster of ``n_workers`` processes with one task thread each, whose BLAS/OpenMP/
    numba pools are limited to ``threads_per_task`` threads, started by ``start_method``
    (:class:`BatchParams`; "fork" falls back to "spawn" when :func:`fork_hazard` says so: the
    cluster's ``start_method`` attribute tells which one ran, ``fork_refused`` why not fork).
    Each task sets its own thread limits too (:func:`~napari_shrec.batch.tasks.limit_threads`),
    so forked workers, whose libraries were loaded before the limits reached their environment,
    keep them as well.

    The workers keep glibc's default memory trimming: distributed starts its workers with
    ``MALLOC_TRIM_THRESHOLD_=65536``, which fixes glibc's mmap threshold, so that every large
    temporary array (an FFT's output, a rotated slab) is mapped and unmapped page by page — a
    ``small`` simulation then takes 18 % longer (``benchmarks/bench_batch.py``). A user's
    explicit ``MALLOC_TRIM_THRESHOLD_`` in the environment still wins."""
    import dask
    from distributed import LocalCluster

    limit = str(max(1, threads_per_task))
    env = {name: limit for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                    "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    trim = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    method, refused = worker_start_method(start_method)
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": trim,
                          "distributed.worker.multiprocessing-method": method}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", env=env)
    cluster.start_method = method
    cluster.fork_refused = refused
    return cluster


@contextlib.contextmanager
def _client(params: BatchParams, client: Any) -> Iterator[tuple[Any, str, int]]:
    """(client, description, threads per task; 0 = each worker's share)."""
    if client is not None:
        address = getattr(getattr(client, "scheduler", None), "address", "?")
        yield client, f"scheduler {address}", params.threads_per_task
        return
    from distributed import Client

    if params.scheduler:
        try:
            remote = Client(params.scheduler, timeout="20s")
        except OSError as exc:
            raise ConnectionError(f"--scheduler {params.scheduler}: cannot connect ({exc})") \
                from None
        with remote:
            yield remote, f"scheduler {params.scheduler}", params.threads_per_task
        return
    threads = params.threads_per_task or max(1, cpu_count() // params.n_workers)
    with local_cluster(params.n_workers, threads, params.start_method) as cluster, \
            Client(cluster) as local:
        started = {"fork": "forked", "spawn": "spawned"}[cluster.start_method]
        if cluster.fork_refused:
            started += f", not forked: {cluster.fork_refused}"
        yield local, f"LocalCluster, {params.n_workers} workers ({started})", threads


class _RemoteCancel(CancelToken):
    """A cancel token a task checks on its worker: set when the batch's ``distributed.Event``
    is (looked up at most once per ``interval_s``). The Event handle is made in the task's own
    thread, where it uses the worker's client; pool threads of the task may then check it."""

    def __init__(self, name: str, interval_s: float = 1.0) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._last = time.monotonic()
        try:
            from distributed import Event

            self._remote: Any = Event(name)
        except Exception:  # noqa: BLE001 - no client on this worker: never cancelled remotely
            self._remote = None

    @property
    def cancelled(self) -> bool:
        if (self._remote is not None and not self._event.is_set()
                and time.monotonic() - self._last >= self._interval_s):
            self._last = time.monotonic()
            try:
                if self._remote.is_set():
                    self._event.set()
            except Exception:  # noqa: BLE001 - scheduler unreachable: keep working
                pass
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise Cancelled("batch cancelled")


def _worker_share(worker: Any) -> int:
    return max(1, cpu_count() // max(1, int(getattr(worker, "nthreads", 1) or 1)))


def run_task_on_worker(task: BatchTask, index: int, threads: int, topic: str,
                       cancel_name: str, interval_s: float) -> TaskResult:
    """The function each dask task runs: :func:`execute_task` with events on ``topic``."""
    from distributed import get_worker

    worker = get_worker()
    threads = threads if threads > 0 else _worker_share(worker)

    def send(kind: str, **fields: Any) -> None:
        worker.log_event(topic, {"kind": kind, "index": index, **fields})

    last = [0.0]

    def progress(done: int, total: int, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= interval_s or (total and done >= total):
            last[0] = now
            send("progress", done=int(done), total=int(total), message=str(message))

    send("started", worker=str(worker.address), threads=threads)
    try:
        return execute_task(task, threads=threads, progress=progress,
                            cancel=_RemoteCancel(cancel_name))
    except BaseException as exc:
        send("error", message=_describe(exc))
        raise


def _describe(exc: BaseException) -> str:
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if type(exc).__name__ == "KilledWorker":
        return ("its worker died on every attempt (killed, out of memory?): "
                + (text or "KilledWorker"))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def run_batch(
    tasks: Sequence[BatchTask],
    params: BatchParams = BatchParams(),
    *,
    client: Any = None,
    progress: ProgressCallback | None = None,
    on_event: Callable[[BatchEvent], None] | None = None,
    cancel: CancelToken | None = None,
    poll_s: float = 0.1,
) -> BatchReport:
    """Run ``tasks`` on a dask.distributed cluster (see the module docstring).

    Args:
        tasks: from the ``plan_*`` functions of :mod:`napari_shrec.batch.tasks`.
        params: where and how (:class:`BatchParams`).
        client: an open ``distributed.Client`` to submit to (``params.scheduler`` and
            ``n_workers`` are then ignored).
        progress: overall ``(tasks ended, total, message)``.
        on_event: per-task :class:`BatchEvent` callback (called in this thread).
        cancel: stops the batch: queued tasks are cancelled, running ones stop at their next
            step; their reports say "cancelled".

    Returns:
        A :class:`BatchReport`; it does not raise for failed tasks (see ``report.ok``).

    Raises:
        FileExistsError, ValueError: before any work, for outputs the batch may not write.
        ConnectionError: the scheduler cannot be reached.
    """
    start = time.perf_counter()
    tasks = list(tasks)
    states = check_tasks(tasks)
    reports = [TaskReport(task) for task in tasks]
    emit = on_event or (lambda event: None)
    total = len(tasks)
    ended = 0

    def tick(message: str) -> None:
        if progress is not None:
            progress(ended, total, message)

    todo: list[int] = []
    for i, (task, state) in enumerate(zip(tasks, states, strict=True)):
        if state == "finished":
            reports[i].status = "skipped"
            reports[i].message = "already finished"
            ended += 1
            emit(BatchEvent("skipped", i, task.name, "already finished"))
        else:
            todo.append(i)
    report = BatchReport(reports, threads_per_task=params.threads_per_task)
    tick(f"{ended} already finished" if ended else "starting")
    if not todo:
        report.elapsed_s = time.perf_counter() - start
        return report
    clean_partials([tasks[i] for i in todo])

    with _client(params, client) as (dask_client, where, threads):
        report.where, report.threads_per_task = where, threads
        link = getattr(dask_client, "dashboard_link", None) if client is None else None
        emit(BatchEvent("cluster", -1, "", where + (f"; dashboard {link}" if link else "")))
        token = uuid.uuid4().hex[:12]
        topic, cancel_name = f"napari-shrec-batch-{token}", f"napari-shrec-batch-{token}-cancel"
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        dask_client.subscribe_topic(topic, lambda event: events.put(event[1]))
        futures = {}
        for i in todo:
            task = tasks[i]
            futures[i] = dask_client.submit(
                run_task_on_worker, task, i, threads, topic, cancel_name,
                params.progress_interval_s, key=f"napari-shrec-{task.action}-{i}-{token}",
                retries=params.retries, pure=False)
            emit(BatchEvent("queued", i, task.name))
        pending = set(todo)
        try:
            while pending:
                try:
                    message = events.get(timeout=poll_s)
                except queue.Empty:
                    message = None
                while message is not None:
                    _on_message(message, reports, emit)
                    try:
                        message = events.get_nowait()
                    except queue.Empty:
                        message = None
                for i in sorted(pending):
                    future = futures[i]
                    if not future.done():
                        continue
                    pending.discard(i)
                    ended += 1
                    rep = reports[i]
                    if future.status == "finished":
                        result: TaskResult = future.result()
                        rep.result = result
                        rep.status = "skipped" if result.skipped else "finished"
                        rep.message = result.summary
                        emit(BatchEvent("finished", i, rep.name, result.summary,
                                        worker=rep.worker, attempt=rep.attempts))
                        tick(f"{rep.name}: {result.summary}")
                    else:
                        exc = future.exception() if future.status == "error" else None
                        rep.status = "failed"
                        rep.message = _describe(exc) if exc is not None else future.status
                        report.errors[rep.name] = rep.message
                        emit(BatchEvent("failed", i, rep.name, rep.message, worker=rep.worker,
                                        attempt=rep.attempts))
                        tick(f"{rep.name} failed")
                if cancel is not None and cancel.cancelled and pending:
                    _cancel(dask_client, cancel_name, [futures[i] for i in pending])
                    for i in sorted(pending):
                        reports[i].status = "cancelled"
                        reports[i].message = "cancelled"
                        emit(BatchEvent("cancelled", i, reports[i].name, "cancelled"))
                    report.cancelled = True
                    pending.clear()
            # events that arrived with the last results
            while not events.empty():
                _on_message(events.get_nowait(), reports, emit)
        except KeyboardInterrupt:  # stop what runs on a remote cluster too, then stop here
            _cancel(dask_client, cancel_name, [futures[i] for i in pending])
            raise
        finally:
            with contextlib.suppress(Exception):
                dask_client.unsubscribe_topic(topic)
    # what killed attempts left behind (no attempt of an ended task runs any more)
    clean_partials([r.task for r in reports if r.status in ("finished", "failed")])
    report.elapsed_s = time.perf_counter() - start
    return report


def _cancel(client: Any, cancel_name: str, futures: list[Any]) -> None:
    from distributed import Event

    with contextlib.suppress(Exception):
        Event(cancel_name, client=client).set()
    with contextlib.suppress(Exception):
        client.cancel(futures)


def _on_message(message: dict[str, Any], reports: list[TaskReport],
                emit: Callable[[BatchEvent], None]) -> None:
    index = int(message.get("index", -1))
    if not 0 <= index < len(reports):
        return
    rep = reports[index]
    if rep.status in ("finished", "skipped", "failed", "cancelled"):
        return  # a late event of an ended task
    kind = str(message.get("kind", ""))
    if kind == "started":
        rep.attempts += 1
        rep.status = "running"
        rep.worker = str(message.get("worker", ""))
        note = f"attempt {rep.attempts}" if rep.attempts > 1 else ""
        emit(BatchEvent("started", index, rep.name, note, worker=rep.worker,
                        attempt=rep.attempts))
    elif kind == "progress":
        emit(BatchEvent("progress", index, rep.name, str(message.get("message", "")),
                        done=int(message.get("done", 0)), total=int(message.get("total", 0)),
                        worker=rep.worker, attempt=rep.attempts))
    elif kind == "error":
        emit(BatchEvent("error", index, rep.name, str(message.get("message", "")),
                        worker=rep.worker, attempt=rep.attempts))
