"""``napari-shrec batch``: simulate, reconstruct, detect or score many tomograms (dask.distributed).

Usage::

    napari-shrec batch simulate --n N --out DIR [--preset small|shrec2020] [--seed BASE]
        [--name model_{i}] [simulation options] [cluster options]
    napari-shrec batch reconstruct INPUT [INPUT ...] [--output NAME] [--frame ...]
        [--weighting ...] [--device ...] [cluster options]
    napari-shrec batch detect INPUT [INPUT ...] [--output picks.txt] [--model M.pt]
        [--min-score S] [--device ...] [cluster options]
    napari-shrec batch score INPUT [INPUT ...] [--picks picks.txt] [--output score.json]
        [--mode ...] [cluster options]

    cluster options: [--scheduler ADDRESS | --workers N] [--threads-per-task N] [--retries K]
        [--overwrite]

INPUTs are dataset folders, files, glob patterns (quoted: 'sims/model_*') or a folder holding
dataset folders. Each tomogram is one task on a dask.distributed cluster: a LocalCluster of
``--workers`` processes, or the running scheduler at ``--scheduler`` (dask-jobqueue SLURM/PBS,
Kubernetes, ``dask scheduler``). Finished outputs (by their provenance) are skipped, so running
the same command again resumes an interrupted batch. Per-task events and the outcome table go
to stderr and stdout. Exit codes: 0 every task finished, 1 some task failed, 2 bad input
(nothing was run), 130 interrupted. See docs/scale.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "format_report"]

_EPILOG = """\
examples:
  napari-shrec batch simulate --n 4 --preset small --out sims/            # 2 local workers
  napari-shrec batch simulate --n 10 --preset shrec2020 --out sims/ --no-reconstruction \\
      --scheduler tcp://login01:8786
  napari-shrec batch reconstruct 'sims/model_*' --workers 4
  napari-shrec batch detect sims/ --output picks.txt
  napari-shrec batch score sims/ --picks picks.txt

Run the same command again to resume: finished outputs are skipped, interrupted ones redone.
See docs/scale.md for SLURM (dask-jobqueue) and remote schedulers.
"""


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "batch", help="run simulate/reconstruct/detect/score over many tomograms on "
        "dask.distributed",
        description="Run one action over many tomograms, one task per tomogram, on a "
        "dask.distributed cluster (local processes by default, or any scheduler). Finished "
        "outputs are skipped; failed tasks are retried and reported.", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(title="batch actions", metavar="ACTION", dest="batch_action")
    actions.required = True
    _add_simulate(actions)
    _add_reconstruct(actions)
    _add_detect(actions)
    _add_score(actions)


def _cluster_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("cluster")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="address of a running dask scheduler, e.g. tcp://host:8786 "
                       "(default: start a LocalCluster)")
    where.add_argument("--workers", type=int, default=2, metavar="N",
                       help="LocalCluster worker processes (default 2)")
    g.add_argument("--threads-per-task", type=int, default=0, metavar="N",
                   help="threads each task computes with (default 0: cores / workers locally, "
                   "a worker's share of its cores on a remote cluster)")
    g.add_argument("--start-method", choices=("fork", "spawn"), default=None,
                   help="how the LocalCluster starts its workers: fork (a copy of this "
                   "process: no second round of imports, about 1 s faster per batch; the "
                   "default on Linux) or spawn (fresh interpreters; the default elsewhere)")
    g.add_argument("--retries", type=int, default=2, metavar="K",
                   help="extra attempts for a task that fails with an error (default 2)")
    g.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist but were not written by a batch with these "
                   "parameters")


def _add_simulate(actions: Any) -> None:
    from ._cli_simulate import add_simulation_options

    p = actions.add_parser(
        "simulate", help="simulate N datasets, one folder each under --out",
        description="Simulate N datasets: task i writes OUT/model_i (--name) with seed "
        "BASE + i, exactly as 'napari-shrec simulate --seed BASE+i' would.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, required=True, help="number of datasets")
    p.add_argument("--out", type=Path, required=True, metavar="DIR",
                   help="folder that receives one dataset folder per task")
    p.add_argument("--preset", default="small", choices=("small", "shrec2020"),
                   help="small: 128×128×64 voxels; shrec2020: 512×512×200 (default small)")
    p.add_argument("--seed", type=int, default=0, metavar="BASE",
                   help="task i uses seed BASE + i (default 0)")
    p.add_argument("--name", default="model_{i}", metavar="PATTERN",
                   help="folder name of task i (default model_{i})")
    add_simulation_options(p)
    _cluster_options(p)
    p.set_defaults(func=run, threads=0)


def _add_reconstruct(actions: Any) -> None:
    from .core.reconstruct import DEVICES, WEIGHTINGS
    from .core.reconstruct_input import FRAMES

    p = actions.add_parser(
        "reconstruct", help="reconstruct the tilt series of many datasets",
        description="Weighted back-projection of each input: a dataset folder (its tilt "
        "series → FOLDER/--output) or a projection stack S.mrc with S.tlt (→ S_rec.mrc).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="dataset folders, stacks, glob patterns or a folder of datasets")
    p.add_argument("--output", default="reconstruction.mrc", metavar="NAME",
                   help="file name written into each dataset folder (default "
                   "reconstruction.mrc; a simulated dataset's own needs --overwrite)")
    p.add_argument("--frame", choices=FRAMES, default=None,
                   help="output frame (default: each input's own)")
    p.add_argument("--weighting", choices=WEIGHTINGS, default="ramp")
    p.add_argument("--sirt-iterations", type=int, default=10)
    p.add_argument("--ctf-correct", action="store_true", help="phase-flip each projection")
    p.add_argument("--noisefree", action="store_true",
                   help="use each dataset's projections_noisefree.mrc")
    p.add_argument("--device", choices=DEVICES, default="auto")
    _cluster_options(p)
    p.set_defaults(func=run)


def _add_detect(actions: Any) -> None:
    p = actions.add_parser(
        "detect", help="detect the particles of many tomograms",
        description="Detect the particles of each input with a trained model: a dataset "
        "folder (its reconstruction.mrc; picks in the grandmodel frame → FOLDER/--output) or a "
        "tomogram T.mrc (→ T_<output> beside it).")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="dataset folders, tomograms, glob patterns or a folder of datasets")
    p.add_argument("--output", default="picks.txt", metavar="NAME",
                   help="particle list name: .txt (SHREC), .star or .csv (default picks.txt)")
    p.add_argument("--model", type=Path, default=None,
                   help="model checkpoint (default: the shipped model)")
    p.add_argument("--min-score", type=float, default=None,
                   help="one threshold for every class (default: the model's tuned ones)")
    p.add_argument("--patch", type=int, default=None, help="cubic patch edge (voxels)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    _cluster_options(p)
    p.set_defaults(func=run)


def _add_score(actions: Any) -> None:
    from .core.score import SCORE_MODES

    p = actions.add_parser(
        "score", help="score the picks of many datasets against their ground truth",
        description="Score FOLDER/--picks against each dataset folder's ground truth and write "
        "FOLDER/--output (JSON as 'napari-shrec score --json').")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="dataset folders, glob patterns or a folder of datasets")
    p.add_argument("--picks", default="picks.txt", metavar="NAME",
                   help="particle list in each folder (default picks.txt)")
    p.add_argument("--output", default="score.json", metavar="NAME",
                   help="score file written into each folder (default score.json)")
    p.add_argument("--mode", choices=SCORE_MODES, default=None,
                   help="scoring rules (default: each dataset's own)")
    _cluster_options(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- running
def plan(args: argparse.Namespace) -> list[Any]:
    """The task list of parsed arguments (raises ValueError/FileNotFoundError on bad input)."""
    from .batch import tasks as batch

    action = args.batch_action
    if action == "simulate":
        from ._cli_simulate import simulation_overrides

        if args.voxel_size is not None and args.voxel_size <= 0:
            raise ValueError("--voxel-size must be > 0")
        for source in args.structures or []:
            if not Path(source).exists():
                raise FileNotFoundError(f"--structures {source}: no such file or folder")
        overrides = simulation_overrides(args)
        overrides.pop("threads", None)
        return batch.plan_simulate(
            args.out, args.n, preset=args.preset, seed=args.seed, name_pattern=args.name,
            overwrite=args.overwrite, tilt_series=not args.no_tilt_series,
            reconstruction=not args.no_reconstruction, structure_sources=args.structures,
            download_structures=not args.no_download,
            surrogate_structures=not args.no_surrogates, **overrides)
    if action == "reconstruct":
        settings = batch.ReconstructSettings(
            frame=args.frame, weighting=args.weighting, sirt_iterations=args.sirt_iterations,
            ctf_correction=args.ctf_correct, noisefree=args.noisefree, device=args.device,
            output_name=args.output)
        return batch.plan_reconstruct(batch.expand_inputs(args.inputs), settings,
                                      overwrite=args.overwrite)
    if action == "detect":
        settings = batch.DetectSettings(
            model=str(args.model) if args.model else None, min_score=args.min_score,
            device=args.device, patch=args.patch, output_name=args.output)
        return batch.plan_detect(batch.expand_inputs(args.inputs), settings,
                                 overwrite=args.overwrite)
    settings = batch.ScoreSettings(picks_name=args.picks, mode=args.mode,
                                   output_name=args.output)
    return batch.plan_score(batch.expand_inputs(args.inputs), settings,
                            overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    from .batch.engine import BatchParams, default_start_method, run_batch

    if not getattr(args, "verbose", False):  # distributed logs every connection at INFO
        import distributed  # noqa: F401  (configures its loggers on import; quiet them after)

        for name in ["distributed", *logging.root.manager.loggerDict]:
            if name == "distributed" or name.startswith("distributed."):
                logging.getLogger(name).setLevel(logging.WARNING)
    params = BatchParams(scheduler=args.scheduler, n_workers=args.workers,
                         threads_per_task=args.threads_per_task, retries=args.retries,
                         start_method=args.start_method or default_start_method())
    tasks = plan(args)
    display = _Display(len(tasks))
    try:
        report = run_batch(tasks, params, progress=display.progress, on_event=display.event)
    except ConnectionError as exc:
        display.close()
        print(f"napari-shrec batch: error: {exc}", file=sys.stderr)
        return 2
    finally:
        display.close()
    sys.stdout.write(format_report(report))
    sys.stdout.flush()
    if report.cancelled:
        return 130
    return 0 if report.ok else 1


def format_report(report: Any) -> str:
    """The outcome table of a :class:`~napari_shrec.batch.engine.BatchReport` and a summary
    line."""
    rows = [("task", "status", "attempts", "output / cause")]
    for t in report.tasks:
        detail = t.message if t.status in ("failed", "cancelled") \
            else f"{t.task.output}: {t.message}"
        rows.append((t.name, t.status, str(t.attempts), detail))
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    lines = ["  ".join(r[k].ljust(widths[k]) for k in range(3)) + "  " + r[3] for r in rows]
    counts = {s: len(report.with_status(s)) for s in ("finished", "skipped", "failed",
                                                      "cancelled")}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing to do"
    where = f" on {report.where}" if report.where else ""
    threads = f", {report.threads_per_task} thread(s) per task" \
        if report.where and report.threads_per_task else ""
    lines.append(f"{len(report.tasks)} tasks: {summary} in {report.elapsed_s:.1f} s"
                 f"{where}{threads}")
    return "\n".join(lines) + "\n"


class _Display:
    """Batch progress on stderr: an overall tqdm bar with each running task's percentage when
    stderr is a terminal; one line per task start, retry, end otherwise (and always for
    errors)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.running: dict[str, str] = {}
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=max(total, 1), desc="batch", unit="task", file=sys.stderr,
                            leave=False)

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def progress(self, done: int, total: int, message: str) -> None:
        if self.bar is not None:
            self.bar.total = max(total, 1)
            self.bar.n = done
            self.bar.refresh()

    def event(self, event: Any) -> None:
        name = event.name
        if event.kind == "cluster":
            self._line(f"running on {event.message}")
        elif event.kind == "started":
            self.running[name] = "0%"
            again = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            if self.bar is None or event.attempt > 1:
                self._line(f"[{name}] started on {event.worker}{again}")
        elif event.kind == "progress" and event.total:
            self.running[name] = f"{100 * event.done // event.total}%"
        elif event.kind == "error":
            self._line(f"[{name}] attempt {event.attempt} failed: {event.message}")
        elif event.kind in ("finished", "failed", "cancelled", "skipped"):
            self.running.pop(name, None)
            if self.bar is None or event.kind == "failed":
                self._line(f"[{name}] {event.kind}: {event.message}")
        if self.bar is not None:
            self.bar.set_postfix_str(" ".join(f"{k} {v}" for k, v in self.running.items()),
                                     refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
