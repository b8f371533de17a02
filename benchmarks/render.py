"""Markdown from a results JSON of ``python -m benchmarks run`` (``python -m benchmarks render
results.json > docs/benchmarks.md``), so docs/benchmarks.md can always be regenerated."""

from __future__ import annotations

from typing import Any

STAGE_NOTES = {
    "structures": "the 12 SHREC'20 structure maps at 1 nm from the shared PDB files and PolNet "
                  "maps, into an empty cache, then from the cache",
    "grandmodel": "crowded particle placement, masks and noise (`core/grandmodel.py`); small: "
                  "64 × 128 × 128 voxels; shrec2020: 200 × 512 × 512 (quick: 200 × 256 × 256)",
    "tiltseries": "a whole simulation (grandmodel, 41-tilt series, reconstruction, files); "
                  "small preset, shrec2020 preset (quick: 200 × 192 × 192 voxels, "
                  "340–400 particles)",
    "reconstruction": "our WBP vs ASTRA-toolbox's CPU FBP (all y slices) and scikit-image "
                      "`iradon` (a few y slices), same contrast-converted projections; "
                      "r = correlation with the noise-free grandmodel, both low-passed "
                      "(σ = 2 voxels) (quick: 64 detector rows of the shrec2020 series)",
    "training": "U-Net training steps through `core.train.train` on a synthetic tomogram "
                "(second epoch) and inference; small: 32³ patches × 4, shrec2020: 64³ × 2",
    "detection": "the shipped model over a tomogram, scored against its ground truth "
                 "(quick: a 200 × 192 × 192 crop of the test tomogram)",
    "template_matching": "our FLCF matcher vs pyTME on the same crop, template, mask, wedge "
                         "and rotations, 2 threads each; both score maps picked and scored by "
                         "our code (`benchmarks/bench_tm.py`); the peak RSS is the main "
                         "process's, without pyTME's two worker processes",
    "scoring": "`core/score.py` vs a straightforward reference (dilate the whole mask, loop "
               "over the picks in Python) on the same synthetic data; counts must be identical",
}


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def _seconds(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    if value < 0.1:
        return f"{1e3 * value:.1f} ms"
    if value < 100:
        return f"{value:.2f} s"
    return f"{value:.0f} s"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(record: dict[str, Any]) -> str:
    """The benchmarks page (Markdown) of one results record."""
    mode = record.get("mode", "?")
    machine = record.get("machine", {}) or {}
    load = record.get("load_average", {}) or {}
    lines: list[str] = ["# Benchmarks", ""]
    lines += [
        "How fast napari-shrec runs each stage of the SHREC'20 benchmark system, how much "
        "memory each needs, and how it compares with established tools run **side by side in "
        "the same process on the same inputs**. The ratio column is *peer time / our time*: "
        "above 1 means napari-shrec is faster.",
        "",
        "This page is generated from a results file; do not edit it by hand:",
        "",
        "```bash",
        "pip install 'napari-shrec[bench]'      # the peers: astra-toolbox, pytme",
        f"python -m benchmarks run --{mode} --out results.json",
        "python -m benchmarks render results.json > docs/benchmarks.md",
        "```",
        "",
    ]
    if mode == "quick":
        lines += [
            "> **This is a `--quick` run**: the small sizes and cropped pieces of the SHREC'20 "
            "sizes, on a shared development machine (load average "
            f"{_num((load.get('start') or [None])[0], '.1f')} at the start, "
            f"{_num((load.get('end') or [None])[0], '.1f')} at the end; other jobs make the "
            "timings noisy). The full-size figures come from `python -m benchmarks run --full`.",
            "",
        ]
    lines += [f"Run `{record.get('command') or 'python -m benchmarks run'}`, started "
              f"{record.get('started', '?')}, took {_seconds(record.get('duration_s'))}.", ""]

    versions = machine.get("versions", {}) or {}
    lines += ["## Machine", "", "| | |", "|---|---|",
              f"| CPU | {_cell(machine.get('cpu', '?'))} |",
              f"| cores | {machine.get('cores', '?')} (usable: "
              f"{machine.get('usable_cores', '?')}) |",
              f"| RAM | {_num(machine.get('ram_gb'), '.1f')} GB |",
              f"| GPU | {_cell(machine.get('gpu') or 'none')} |",
              f"| OS, Python | {_cell(machine.get('os', '?'))}, "
              f"{machine.get('python', '?')} |",
              "| versions | " + ", ".join(f"{k} {v}" for k, v in versions.items()
                                         if v is not None) + " |",
              f"| commit | {machine.get('git_commit') or '?'} |", ""]

    comparisons = record.get("comparisons", []) or []
    lines += ["## Side by side with other tools", ""]
    if comparisons:
        lines += ["| stage | size | what | napari-shrec | peer | peer time | peer / ours | "
                  "quality |", "|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            lines.append(f"| {c['stage']} | {c['size']} | {_cell(c['what'])} | "
                         f"{_seconds(c.get('ours_s'))} | {_cell(c['peer'])} | "
                         f"{_seconds(c.get('peer_s'))} | **{_num(c.get('ratio'), '.2f')}×** | "
                         f"{_cell(c.get('quality', ''))} |")
    else:
        lines.append("No peer comparison in this run.")
    lines.append("")

    lines += ["## Every stage", "",
              "Wall time of the stage's process (imports included), the stage's own figure, "
              "and the process's peak resident memory.", "",
              "| stage | size | status | wall | peak RSS | result |",
              "|---|---|---|---|---|---|"]
    for row in record.get("stages", []) or []:
        status = row.get("status", "?")
        detail = row.get("summary", "") if status == "ok" else row.get("error", "")
        rss = row.get("peak_rss_mb")
        lines.append(f"| {row['stage']} | {row['size']} | {status} | "
                     f"{_seconds(row.get('wall_s'))} | "
                     f"{'–' if rss is None else f'{rss:.0f} MiB'} | {_cell(detail)} |")
    lines += ["", "## What each stage measures", ""]
    stages_run = []
    for row in record.get("stages", []) or []:
        if row["stage"] not in stages_run:
            stages_run.append(row["stage"])
    for stage in stages_run:
        lines.append(f"- **{stage}**: {STAGE_NOTES.get(stage, '')}.")
    lines += ["", f"Peak memory: {record.get('peak_memory_method', '')}.", "",
              "Each benchmark script also runs alone, with more options; see "
              "`benchmarks/README.md`.", ""]
    return "\n".join(lines)
