"""Reports of scored submissions: paper-style text tables, JSON, CSV and PNG plots.

- :func:`format_localization_table` — paper Table 3 (RR TP FP FN MH RO AD recall precision miss
  rate F1), one row per submission.
- :func:`format_class_f1_table` — paper Table 4 (per-class F1, classes by molecular weight), one
  row per submission, plus the headline mean and the script-compatible "F1 macro".
- :func:`format_size_group_table` — paper Table 6 (mean F1 per size group).
- :func:`results_to_json` / :func:`write_json` — the documented JSON schema (``docs/scoring.md``).
- :func:`results_to_frame` / :func:`write_csv` — one flat row per submission.
- :func:`confusion_figure`, :func:`f1_vs_weight_figure`, :func:`write_plots` — paper Figs. 12
  and 11 as PNG. Figures are built with :class:`matplotlib.figure.Figure` on an Agg canvas, so
  pyplot's global state and the user's backend are never touched.

Every writer is atomic (temporary file, then rename) and refuses to replace an existing file
unless ``overwrite=True``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..io._atomic import atomic_path, check_overwrite, write_text_atomic
from .classes import SIZE_GROUPS
from .score import MISSED, ScoreResult

__all__ = [
    "LOCALIZATION_COLUMNS",
    "confusion_figure",
    "f1_vs_weight_figure",
    "format_class_f1_table",
    "format_localization_table",
    "format_report",
    "format_size_group_table",
    "plot_paths",
    "results_to_frame",
    "results_to_json",
    "save_figure",
    "write_csv",
    "write_json",
    "write_plots",
]

#: (header, ScoreResult attribute) of paper Table 3, in the paper's order.
LOCALIZATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("RR", "RR"),
    ("TP", "TP"),
    ("FP", "FP"),
    ("FN", "FN"),
    ("MH", "MH"),
    ("RO", "RO"),
    ("AD", "AD"),
    ("Recall", "recall"),
    ("Precision", "precision"),
    ("Miss rate", "miss_rate"),
    ("F1 Score", "F1"),
)


# --------------------------------------------------------------------------- text tables
def _fmt(value: Any, digits: int = 3) -> str:
    """An int as is, a float with ``digits`` decimals, NaN/None as "-"."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if math.isnan(v):
        return "-"
    return f"{v:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [cells[0].ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule] + [line(r) for r in rows])


def format_localization_table(results: Sequence[ScoreResult]) -> str:
    """Paper Table 3: one row per submission (AD in voxels, ratios with 3 decimals)."""
    header = ["Submission"] + [h for h, _ in LOCALIZATION_COLUMNS]
    rows = [[r.submission] + [_fmt(getattr(r, attr)) for _, attr in LOCALIZATION_COLUMNS]
            for r in results]
    return _table(header, rows)


def _class_columns(results: Sequence[ScoreResult]) -> list[str]:
    """Scored classes in weight order (first result's order, then new ones), dropping classes
    whose F1 is undefined (absent from both sides) in every result."""
    names: list[str] = []
    for r in results:
        for name in r.scored_classes:
            if name not in names:
                names.append(name)
    return [n for n in names
            if any(not math.isnan(r.per_class_F1.get(n, float("nan"))) for r in results)]


def format_class_f1_table(results: Sequence[ScoreResult]) -> str:
    """Paper Table 4: per-class classification F1, one row per submission, classes ordered by
    molecular weight; then ``mean`` (headline: mean over protein classes) and ``macro+bg`` (the
    organizers' script's "F1 Macro", which also averages the "missed" pseudo-class)."""
    classes = _class_columns(results)
    header = ["Submission"] + classes + ["mean", "macro+bg"]
    rows = []
    for r in results:
        cells = [_fmt(r.per_class_F1.get(c, float("nan"))) for c in classes]
        rows.append([r.submission] + cells
                    + [_fmt(r.mean_class_F1), _fmt(r.F1_macro_with_background)])
    return _table(header, rows)


def format_size_group_table(results: Sequence[ScoreResult]) -> str:
    """Paper Table 6: mean per-class F1 within the size groups small / medium / large."""
    header = ["Submission"] + [g.capitalize() for g in SIZE_GROUPS]
    rows = [[r.submission] + [_fmt(r.size_group_F1.get(g)) for g in SIZE_GROUPS]
            for r in results]
    return _table(header, rows)


def format_report(results: Sequence[ScoreResult]) -> str:
    """The three tables with titles, as the CLI prints them."""
    parts = [
        "Localization (paper Table 3; AD in voxels)",
        format_localization_table(results),
        "",
        "Classification F1 per class (paper Table 4; classes by molecular weight)",
        format_class_f1_table(results),
        "",
        "Classification F1 per size group (paper Table 6)",
        format_size_group_table(results),
    ]
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- JSON and CSV
def results_to_json(results: Sequence[ScoreResult], *, include_predictions: bool = False
                    ) -> list[dict[str, Any]]:
    """One JSON object per submission (:meth:`ScoreResult.to_dict`), in the given order."""
    return [r.to_dict(include_predictions=include_predictions) for r in results]


def write_json(path: str | os.PathLike, results: Sequence[ScoreResult], *,
               overwrite: bool = False, include_predictions: bool = False) -> Path:
    """Write :func:`results_to_json` to ``path`` (UTF-8, indented, NaN written as null)."""
    text = json.dumps(results_to_json(results, include_predictions=include_predictions),
                      indent=2, allow_nan=False)
    return write_text_atomic(path, text + "\n", overwrite=overwrite)


def results_to_frame(results: Sequence[ScoreResult]) -> pd.DataFrame:
    """One flat row per submission.

    Columns: submission, mode, N_gt, RR, TP, FP, FN, MH, RO, AD, recall, precision, miss_rate,
    F1, duplicates, ignored, z_shift, mean_class_F1, F1_macro_with_background,
    F1_small / F1_medium / F1_large, then ``F1_<class>`` and ``loc_F1_<class>`` per class.
    """
    classes: list[str] = []
    for r in results:
        classes += [c for c in r.scored_classes if c not in classes]
    records = []
    for r in results:
        rec: dict[str, Any] = {
            "submission": r.submission,
            "mode": r.params.mode,
            "N_gt": r.N_gt,
            "RR": r.RR,
            "TP": r.TP,
            "FP": r.FP,
            "FN": r.FN,
            "MH": r.MH,
            "RO": r.RO,
            "AD": r.AD,
            "recall": r.recall,
            "precision": r.precision,
            "miss_rate": r.miss_rate,
            "F1": r.F1,
            "duplicates": r.n_duplicates,
            "ignored": r.n_ignored,
            "z_shift": r.z_shift,
            "mean_class_F1": r.mean_class_F1,
            "F1_macro_with_background": r.F1_macro_with_background,
        }
        for g in SIZE_GROUPS:
            rec[f"F1_{g}"] = r.size_group_F1.get(g, float("nan"))
        for c in classes:
            rec[f"F1_{c}"] = r.per_class_F1.get(c, float("nan"))
        for c in classes:
            rec[f"loc_F1_{c}"] = r.per_class_localization_F1.get(c, float("nan"))
        records.append(rec)
    return pd.DataFrame.from_records(records)


def write_csv(path: str | os.PathLike, results: Sequence[ScoreResult], *,
              overwrite: bool = False) -> Path:
    """Write :func:`results_to_frame` as CSV (undefined values as empty cells)."""
    text = results_to_frame(results).to_csv(index=False, float_format="%.6g")
    return write_text_atomic(path, text, overwrite=overwrite)


# --------------------------------------------------------------------------- plots
def _new_figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def confusion_figure(result: ScoreResult):  # -> matplotlib.figure.Figure
    """Confusion-matrix heatmap (paper Fig. 12): rows = true classes, columns = first-hit class
    (+ "missed"), both ordered by molecular weight; counts written in the non-empty cells."""
    cm = result.confusion
    data = cm.to_numpy(dtype=np.int64)
    n_rows, n_cols = data.shape
    fig = _new_figure(max(5.0, 0.55 * n_cols + 2.5), max(4.5, 0.5 * n_rows + 1.8))
    ax = fig.add_subplot()
    shown = np.ma.masked_equal(data, 0)
    image = ax.imshow(shown, cmap="viridis", aspect="equal", interpolation="nearest",
                      vmin=0, vmax=max(1, int(data.max()) if data.size else 1))
    cbar = fig.colorbar(image, ax=ax, shrink=0.8)
    cbar.set_label("particles")
    ax.set_xticks(range(n_cols), [str(c) for c in cm.columns], rotation=90)
    ax.set_yticks(range(n_rows), [str(r) for r in cm.index])
    ax.set_xlabel("predicted class (first hit)")
    ax.set_ylabel("true class")
    vmax = float(data.max()) if data.size else 0.0
    for i in range(n_rows):
        for j in range(n_cols):
            if data[i, j]:
                light = data[i, j] < 0.6 * vmax
                ax.text(j, i, str(int(data[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if light else "black")
    if MISSED in cm.columns:
        ax.axvline(list(cm.columns).index(MISSED) - 0.5, color="0.5", linewidth=1)
    ax.set_title(f"{result.submission}: mean class F1 {_fmt(result.mean_class_F1)}, "
                 f"localization F1 {_fmt(result.F1)}", fontsize=10)
    return fig


def f1_vs_weight_figure(results: Sequence[ScoreResult]):  # -> matplotlib.figure.Figure
    """Per-class F1 against molecular weight (kDa, log axis) — paper Fig. 11; one line per
    submission. Classes without a weight (fiducial) and undefined F1 values are left out."""
    fig = _new_figure(8.0, 5.0)
    ax = fig.add_subplot()
    labels: dict[str, tuple[float, float]] = {}  # class → (weight, F1 of the first result)
    for r in results:
        pts = []
        for name in r.scored_classes:
            w = r.per_class.at[name, "weight_kda"]
            f1 = r.per_class_F1.get(name, float("nan"))
            if not (math.isnan(float(w)) or math.isnan(f1)):
                pts.append((float(w), f1, name))
        pts.sort()
        if not pts:
            continue
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=4,
                label=r.submission)
        for w, f1, name in pts:
            labels.setdefault(name, (w, f1))
    # class names beside the points; classes of nearly equal weight (3cf3, 1bxn, 1qvr) alternate
    # left / right / above so their names do not overlap
    placements = (((-4, 4), "right"), ((4, -10), "left"), ((0, 9), "center"))
    previous = None
    k = 0
    for name, (w, f1) in sorted(labels.items(), key=lambda item: item[1][0]):
        k = k + 1 if previous is not None and math.log10(w / previous) < 0.06 else 0
        previous = w
        offset, ha = placements[k % len(placements)]
        ax.annotate(name, (w, f1), textcoords="offset points", xytext=offset, ha=ha,
                    fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.08)
    ax.set_xlabel("molecular weight (kDa, log scale)")
    ax.set_ylabel("classification F1")
    ax.grid(True, which="both", alpha=0.3)
    if results:
        ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Classification F1 versus molecular weight")
    return fig


def _safe_stem(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "submission"
    return stem[:80]


def plot_paths(submissions: Sequence[str], folder: str | os.PathLike) -> list[Path]:
    """The PNG files :func:`write_plots` writes for these submission names:
    ``<submission>_confusion.png`` each (numbered when names repeat), then ``f1_vs_weight.png``."""
    root = Path(folder)
    paths: list[Path] = []
    seen: dict[str, int] = {}
    for name in submissions:
        stem = _safe_stem(name)
        seen[stem] = seen.get(stem, 0) + 1
        if seen[stem] > 1:
            stem = f"{stem}_{seen[stem]}"
        paths.append(root / f"{stem}_confusion.png")
    paths.append(root / "f1_vs_weight.png")
    return paths


def save_figure(fig, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Save a figure as PNG atomically (refuses to overwrite unless asked)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return Path(path)


def write_plots(results: Sequence[ScoreResult], folder: str | os.PathLike, *,
                overwrite: bool = False) -> list[Path]:
    """Write the confusion heatmaps and the F1-vs-weight plot into ``folder`` (created)."""
    paths = plot_paths([r.submission for r in results], folder)
    for p in paths:
        check_overwrite(p, overwrite)
    Path(folder).mkdir(parents=True, exist_ok=True)
    for r, p in zip(results, paths[:-1], strict=True):
        save_figure(confusion_figure(r), p, overwrite=overwrite)
    save_figure(f1_vs_weight_figure(results), paths[-1], overwrite=overwrite)
    return paths
