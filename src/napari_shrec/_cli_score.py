"""``napari-shrec score``: score submissions against a ground truth, the SHREC'20/'21 way.

Usage::

    napari-shrec score --gt DATASET_FOLDER SUBMISSION [SUBMISSION ...]
    napari-shrec score --gt particle_locations.txt occupancy_mask.mrc SUBMISSION [...]
        [--mode native|shrec2020|shrec2021] [--unknown-as-misclassified]
        [--json OUT.json] [--csv OUT.csv] [--plots DIR] [--overwrite]

Prints paper Tables 3, 4 and 6 (one row per submission) on stdout; notes, progress (tqdm, only
when stderr is a terminal) and errors on stderr. Exit codes: 0 done, 2 bad input (the message
names the file; no traceback), 130 interrupted.

This module imports neither napari nor Qt; ``cli.py`` wires :func:`add_parser` and :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cli_progress import progress_bar


if TYPE_CHECKING:
    from .io.dataset import ScoringGroundTruth

__all__ = ["add_parser", "run"]

_PROG = "napari-shrec score"

_EPILOG = """\
examples:
  napari-shrec score --gt shrec2020/model_9 umc.txt yopo.txt --json scores.json --plots plots/
  napari-shrec score --gt particle_locations.txt occupancy_mask.mrc --mode shrec2020 sub.txt
  napari-shrec score --gt my_sim/ picks.star --csv scores.csv

--gt takes a dataset folder (SHREC'20, SHREC'21 or napari-shrec) or the two files particle list
+ occupancy-mask MRC, in any order. The default --mode comes from the dataset (SHREC'20 →
shrec2020, SHREC'21 → shrec2021, napari-shrec → native); with two files it is native.
See docs/scoring.md for every metric and the JSON schema.
"""


class _CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def add_parser(subparsers: Any) -> None:
    """Add the ``score`` subcommand to an argparse ``subparsers`` object.

    The subparser gets ``func=run`` as a default, so ``args.func(args)`` runs it.
    """
    from .core.score import SCORE_MODES

    p = subparsers.add_parser(
        "score",
        help="score submissions (localization + classification) the SHREC'20/'21 way",
        description="Score particle-picking submissions against a ground truth with the rules "
                    "of the SHREC'20/'21 evaluators: a prediction hits the particle under it in "
                    "the once-dilated occupancy mask.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--gt", nargs="+", required=True, metavar="DATASET_OR_FILES",
                   help="dataset folder, or particle list + occupancy-mask MRC (any order)")
    p.add_argument("submissions", nargs="*", metavar="SUBMISSION",
                   help="submission files (SHREC txt 'class x y z ...', STAR or CSV)")
    p.add_argument("--mode", choices=SCORE_MODES, default=None,
                   help="scoring rules (default: from the dataset; native for two files)")
    p.add_argument("--unknown-as-misclassified", action="store_true",
                   help="count labels that are not in the class table as misclassifications "
                        "instead of stopping with an error")
    p.add_argument("--z-offset", type=int, default=None, metavar="VOXELS",
                   help="shrec2020: padding slices above the grandmodel (default 156)")
    p.add_argument("--no-z-shift", action="store_true",
                   help="shrec2020: do not apply the organizers' +156 z heuristic")
    p.add_argument("--json", type=Path, default=None, metavar="OUT",
                   help="write every number as JSON (a list, one object per submission)")
    p.add_argument("--csv", type=Path, default=None, metavar="OUT",
                   help="write one flat CSV row per submission")
    p.add_argument("--plots", type=Path, default=None, metavar="DIR",
                   help="write confusion heatmaps and the F1-vs-weight plot (PNG) into DIR")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``score`` with parsed arguments; returns the exit code (0, 2 or 130)."""
    from .core.progress import Cancelled

    if getattr(args, "debug", False):  # napari-shrec --debug score …: full tracebacks
        return _run(args)
    try:
        return _run(args)
    except _CliError as exc:
        _error(str(exc))
    except (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        _error(str(exc))
    except (ValueError, KeyError, OSError) as exc:  # ParticleFileError, MrcReadError, ...
        _error(str(exc) or exc.__class__.__name__)
    except (KeyboardInterrupt, Cancelled):
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    return 2


def _error(message: str) -> None:
    print(f"{_PROG}: error: {message}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from .core.score import ScoreParams, UnknownClassLabelsError, score_submission
    from .core.score_report import format_report, plot_paths, write_csv, write_json, write_plots
    from .io._atomic import check_overwrite

    gt_args, submissions = _split_gt_and_submissions(list(args.gt), list(args.submissions))
    if not submissions:
        raise _CliError("no SUBMISSION given (usage: napari-shrec score --gt GT SUBMISSION ...)")
    for s in submissions:
        if not s.is_file():
            raise _CliError(f"no such submission file: {s}")
    names = _submission_names(submissions)

    # refuse to overwrite before doing any work
    overwrite = bool(args.overwrite)
    for out in (args.json, args.csv):
        if out is not None:
            check_overwrite(Path(out), overwrite)
    if args.plots is not None:
        if Path(args.plots).exists() and not Path(args.plots).is_dir():
            raise _CliError(f"--plots {args.plots}: exists and is not a folder")
        for p in plot_paths(names, args.plots):
            check_overwrite(p, overwrite)

    gt = _load_ground_truth(gt_args)
    mode = args.mode or gt.default_mode
    z_offset = args.z_offset if args.z_offset is not None else (
        gt.z_offset if gt.z_offset is not None else 156)
    params = ScoreParams(mode=mode, count_unknown_as_misclassified=args.unknown_as_misclassified,
                         z_offset=int(z_offset), auto_z_shift=not args.no_z_shift)
    print(f"ground truth: {gt.description}; mode {mode}", file=sys.stderr)
    if mode == "native" and gt.z_offset:
        print(f"note: this dataset's grandmodel starts at z = {gt.z_offset} of its reconstruction; "
              "native mode takes predictions in the occupancy mask's frame (for predictions in "
              f"the reconstruction frame use --mode shrec2020 --z-offset {gt.z_offset} "
              "--no-z-shift)", file=sys.stderr)

    results = []
    for path, name in zip(submissions, names, strict=True):
        predictions = _read_submission(path)
        progress, close = progress_bar(name)
        try:
            result = score_submission(gt.particles, gt.occupancy_mask, predictions, params,
                                      class_table=gt.class_table, submission_name=name,
                                      progress=progress)
        except UnknownClassLabelsError as exc:  # names its own source (GT or submission)
            raise _CliError(str(exc)) from None
        except ValueError as exc:  # e.g. a mask id beyond the ground-truth list
            raise _CliError(f"{path} against {gt.description}: {exc}") from None
        finally:
            close()
        for note in result.warnings:
            print(f"note: {name}: {note}", file=sys.stderr)
        results.append(result)

    sys.stdout.write(format_report(results))
    sys.stdout.flush()
    if args.json is not None:
        print(f"wrote {write_json(args.json, results, overwrite=overwrite)}", file=sys.stderr)
    if args.csv is not None:
        print(f"wrote {write_csv(args.csv, results, overwrite=overwrite)}", file=sys.stderr)
    if args.plots is not None:
        for p in write_plots(results, args.plots, overwrite=overwrite):
            print(f"wrote {p}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- arguments
def _split_gt_and_submissions(gt_values: list[str], positional: list[str]
                              ) -> tuple[list[Path], list[Path]]:
    """``--gt`` is greedy (nargs="+"), so it may have swallowed submissions: a folder takes one
    value, a file pair two; the rest are submissions."""
    from .io.mrc import MRC_SUFFIXES

    if not gt_values:
        raise _CliError("--gt needs a dataset folder or a particle list and an occupancy mask")
    first = Path(gt_values[0])
    if first.is_dir():
        n = 1
    elif not first.exists() and not first.suffix:
        raise _CliError(f"--gt {first}: no such dataset folder")
    else:
        if len(gt_values) < 2:
            if not first.exists():
                raise _CliError(f"--gt {first}: no such dataset folder or file")
            raise _CliError(f"--gt {first}: give a dataset folder, or two files: the particle "
                            "list and the occupancy mask (.mrc)")
        n = 2
    gt = [Path(v) for v in gt_values[:n]]
    subs = [Path(v) for v in gt_values[n:]] + [Path(v) for v in positional]
    if n == 2:
        is_mrc = [p.suffix.lower() in MRC_SUFFIXES for p in gt]
        if sum(is_mrc) != 1:
            raise _CliError(f"--gt {gt[0]} {gt[1]}: expected one particle list and one occupancy "
                            f"mask ({'/'.join(MRC_SUFFIXES)}), in any order")
        if is_mrc[0]:
            gt = [gt[1], gt[0]]  # particle list first
        for p in gt:
            if not p.exists():
                raise FileNotFoundError(f"--gt: no such file: {p}")
    return gt, subs


def _submission_names(paths: list[Path]) -> list[str]:
    """File stems; where stems repeat, ``parent/stem``; where those repeat too, the full path."""
    stems = [p.stem for p in paths]
    names = []
    for p, stem in zip(paths, stems, strict=True):
        if stems.count(stem) == 1:
            names.append(stem)
        else:
            names.append(f"{p.parent.name}/{stem}" if p.parent.name else stem)
    if len(set(names)) != len(names):
        names = [str(p) for p in paths]
    return names


# --------------------------------------------------------------------------- inputs
def _naming(exc: BaseException, path: Path) -> str:
    """The exception's message, prefixed with ``path`` unless it already names it."""
    message = str(exc) or exc.__class__.__name__
    return message if str(path) in message or path.name in message else f"{path}: {message}"


def _read_submission(path: Path) -> Any:
    from .io.particles import read_particles

    try:
        return read_particles(path)
    except (ValueError, KeyError, OSError) as exc:
        raise _CliError(_naming(exc, path)) from None


def _load_ground_truth(gt: list[Path]) -> ScoringGroundTruth:
    from .io.dataset import ScoringGroundTruth, load_dataset, scoring_ground_truth

    if len(gt) == 1:
        folder = gt[0]
        try:
            return scoring_ground_truth(load_dataset(folder))
        except (ValueError, KeyError, OSError) as exc:
            raise _CliError(_naming(exc, folder)) from None

    from .io.mrc import read_mrc
    from .io.particles import read_particles

    particle_file, mask_file = gt
    try:
        particles = read_particles(particle_file)
    except (ValueError, KeyError, OSError) as exc:
        raise _CliError(_naming(exc, particle_file)) from None
    try:
        mask = read_mrc(mask_file).data
    except (ValueError, OSError) as exc:
        raise _CliError(_naming(exc, mask_file)) from None
    return ScoringGroundTruth(
        particles=particles,
        occupancy_mask=mask,
        class_table=None,
        default_mode="native",
        z_offset=None,
        description=f"{particle_file} ({len(particles)} particles) + {mask_file} "
                    f"(mask {tuple(mask.shape)})",
    )
