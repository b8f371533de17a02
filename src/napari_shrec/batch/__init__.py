"""Batch runs over many tomograms on dask.distributed: ``napari-shrec batch``, the Batch widget.

- :mod:`~napari_shrec.batch.tasks`: one tomogram's task (simulate, reconstruct, detect, score),
  the plans that build task lists, and :func:`execute_task` (runs one task here);
- :mod:`~napari_shrec.batch.provenance`: when an output counts as finished;
- :mod:`~napari_shrec.batch.engine`: :func:`run_batch` on a LocalCluster or a remote scheduler,
  with retries, per-task events and cancellation.

Example::

    from napari_shrec.batch import BatchParams, plan_simulate, run_batch

    tasks = plan_simulate("sims/", 4, preset="small", seed=10)
    report = run_batch(tasks, BatchParams(n_workers=2))
    assert report.ok

No napari or Qt here; dask is imported only when a batch runs (see docs/scale.md).
"""

from .engine import BatchEvent, BatchParams, BatchReport, TaskReport, run_batch
from .tasks import (
    ACTIONS,
    BatchTask,
    DetectSettings,
    ReconstructSettings,
    ScoreSettings,
    TaskResult,
    check_tasks,
    execute_task,
    expand_inputs,
    plan_detect,
    plan_reconstruct,
    plan_score,
    plan_simulate,
)

__all__ = [
    "ACTIONS",
    "BatchEvent",
    "BatchParams",
    "BatchReport",
    "BatchTask",
    "DetectSettings",
    "ReconstructSettings",
    "ScoreSettings",
    "TaskReport",
    "TaskResult",
    "check_tasks",
    "execute_task",
    "expand_inputs",
    "plan_detect",
    "plan_reconstruct",
    "plan_score",
    "plan_simulate",
    "run_batch",
]
