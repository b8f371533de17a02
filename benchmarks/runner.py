"""The benchmark runner: every stage of napari-shrec at the ``small`` and ``shrec2020`` sizes, with
peak memory, machine information and side-by-side peer comparisons, into one results JSON.

    python -m benchmarks run [--quick | --full] [--out results.json] [--overwrite]
                             [--only STAGE ...] [--size small|shrec2020 ...]
    python -m benchmarks render results.json > docs/benchmarks.md

Stages (:data:`STAGES`): structures, grandmodel, tiltseries, reconstruction, training,
detection, template_matching, scoring. Each (stage, size) runs in a fresh Python process
(``python -m benchmarks _stage …``), so its peak resident memory is its own: the child's
``VmHWM`` (Linux ``/proc/self/status``; ``ru_maxrss`` elsewhere) at its end, imports and touched
memory-mapped pages included. The stage writes a JSON record; the runner gathers them.

``--quick`` runs the small sizes and cropped pieces of the SHREC'20 sizes (≤ 10 min on a 2-core
laptop CPU); ``--full`` runs the full SHREC'20 sizes (512 × 512 × 200 voxels; tens of minutes).
Peers, run in the same process on the same inputs (benchmark-only extras, ``[bench]``):
reconstruction vs ASTRA-toolbox CPU FBP and scikit-image ``iradon`` (a slice subset); template
matching vs pyTME (CPU backend, same template, mask, wedge and rotations); scoring vs a
straightforward reference implementation (identical counts asserted).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from napari_shrec.io._json import json_default

SCHEMA = "napari-shrec-benchmarks/1"
STAGES: tuple[str, ...] = ("structures", "grandmodel", "tiltseries", "reconstruction",
                           "training", "detection", "template_matching", "scoring")
SIZES: tuple[str, ...] = ("small", "shrec2020")
MODES: tuple[str, ...] = ("quick", "full")
REPO = Path(__file__).resolve().parents[1]
DEFAULT_STRUCTURES = REPO.parent / "shared" / "structures"
DEFAULT_SMALL_DATASET = Path("/tmp/small_set/model_0")
DEFAULT_SHREC_DATASET = Path("/work/data/set_cal/snr0.004/model_5")
DEFAULT_TEST_DATASET = Path("/work/data/set_cal/snr0.004/model_5")
PEAK_MEMORY_METHOD = ("peak resident set size of the stage's own process (one fresh Python "
                      "process per stage and size): Linux VmHWM from /proc/self/status at the "
                      "stage's end, imports and touched memory-mapped pages included")


@dataclass(frozen=True)
class RunParams:
    """What one ``run`` does.

    Attributes:
        mode: "quick" (small sizes + cropped SHREC'20 pieces) or "full" (full SHREC'20 sizes).
        stages: stages to run, in :data:`STAGES` order.
        sizes: sizes to run ("small", "shrec2020").
        small_dataset, shrec_dataset, test_dataset: dataset folders read by reconstruction
            (small, shrec2020), detection and template matching (small, the test tomogram).
        structures: the structure folder (holding pdb/ and polnet_maps_10A/).
    """

    mode: str = "quick"
    stages: tuple[str, ...] = STAGES
    sizes: tuple[str, ...] = SIZES
    small_dataset: Path = DEFAULT_SMALL_DATASET
    shrec_dataset: Path = DEFAULT_SHREC_DATASET
    test_dataset: Path = DEFAULT_TEST_DATASET
    structures: Path = DEFAULT_STRUCTURES

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in self.stages:
            if name not in STAGES:
                raise ValueError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
        for name in self.sizes:
            if name not in SIZES:
                raise ValueError(f"unknown size {name!r}; choose from {', '.join(SIZES)}")
        object.__setattr__(self, "stages", tuple(s for s in STAGES if s in self.stages))
        object.__setattr__(self, "sizes", tuple(s for s in SIZES if s in self.sizes))


# --------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, GPU, OS and the versions of the libraries that matter."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = None
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 2**20, 1)
    versions: dict[str, str | None] = {}
    for package in ("napari-shrec", "numpy", "scipy", "numba", "torch", "scikit-image",
                    "astra-toolbox", "pytme", "pyfftw"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": usable, "ram_gb": ram_gb,
            "gpu": gpu, "os": platform.platform(), "python": platform.python_version(),
            "versions": versions, "git_commit": _git_commit()}


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- stages
def _bench(name: str) -> Any:
    import importlib

    return importlib.import_module(f"benchmarks.{name}")


def _sources(params: RunParams) -> list[Path]:
    return [p for p in (params.structures / "pdb", params.structures / "polnet_maps_10A")
            if p.is_dir()]


def _comparison(what: str, ours_s: float, peer: str, peer_s: float, quality: str,
                **extra: Any) -> dict[str, Any]:
    return {"what": what, "ours_s": ours_s, "peer": peer, "peer_s": peer_s,
            "ratio": peer_s / ours_s if ours_s > 0 else None, "quality": quality, **extra}


def _small_dataset(params: RunParams, scratch: Path) -> Path:
    """The small dataset folder; simulated into ``scratch`` (small preset) when missing."""
    if (params.small_dataset / "reconstruction.mrc").is_file():
        return params.small_dataset
    folder = scratch / "small_dataset"
    if not (folder / "reconstruction.mrc").is_file():
        _bench("bench_simulate").time_simulation("small", folder, sources=_sources(params))
    return folder


def _need(folder: Path, what: str) -> Path:
    if not (folder / "reconstruction.mrc").is_file():
        raise FileNotFoundError(f"{folder}: no simulated dataset here ({what}); pass "
                                f"--shrec-dataset/--test-dataset")
    return folder


def stage_structures(size: str, params: RunParams, scratch: Path) -> dict:
    """The 12 SHREC'20 maps at 1 nm, cold (empty cache) and cached (same for both sizes)."""
    r = _bench("bench_structures").time_library(_sources(params))
    r["summary"] = (f"{r['n_maps']} maps at 1 nm: cold {r['cold_s']:.1f} s, cached "
                    f"{r['cached_s']:.2f} s")
    return r


def stage_grandmodel(size: str, params: RunParams, scratch: Path) -> dict:
    shape, n = {"small": ((64, 128, 128), (30, 40)),
                "shrec2020": ((200, 256, 256), (600, 700)) if params.mode == "quick"
                else ((200, 512, 512), (2400, 2800))}[size]
    r = _bench("bench_grandmodel").time_grandmodel(shape, n, sources=_sources(params))
    r["summary"] = (f"{'×'.join(map(str, shape))}: build {r['build_s']:.1f} s, "
                    f"{r['placed']}/{r['requested']} particles")
    return r


def stage_tiltseries(size: str, params: RunParams, scratch: Path) -> dict:
    """A whole simulation (grandmodel, tilt series, reconstruction, files)."""
    overrides: dict[str, Any] = {}
    preset = "small" if size == "small" else "shrec2020"
    if size == "shrec2020" and params.mode == "quick":
        overrides = {"shape_zyx": (200, 192, 192), "n_particles": (340, 400)}
    r = _bench("bench_simulate").time_simulation(preset, scratch / f"sim_{size}",
                                                 sources=_sources(params), **overrides)
    parts = ", ".join(f"{k} {v:.1f} s" for k, v in r["timings_s"].items())
    r["summary"] = (f"{'×'.join(map(str, r['shape_zyx']))}, {r['tilts']} tilts: "
                    f"{r['wall_s']:.1f} s ({parts})")
    return r


def stage_reconstruction(size: str, params: RunParams, scratch: Path) -> dict:
    bench = _bench("bench_reconstruct")
    if size == "small":
        folder, rows, n_iradon = _small_dataset(params, scratch), None, 8
    else:
        folder = _need(params.shrec_dataset, "reconstruction")
        rows, n_iradon = ((224, 288), 4) if params.mode == "quick" else (None, 8)
    inputs = ("projections",) if params.mode == "quick" else ("projections",
                                                              "projections_noisefree")
    r = bench.compare_reconstruction(folder, rows=rows, n_iradon_slices=n_iradon, inputs=inputs)
    comparisons = []
    for name in inputs:
        row = r[name]
        shape = "×".join(map(str, row["shape_zyx"]))
        label = f"WBP {shape} from {r['tilts']} tilts ({name.replace('_', ' ')})"
        if "astra_s" in row:
            comparisons.append(_comparison(
                label, row["ours_s"], "ASTRA-toolbox CPU FBP", row["astra_s"],
                f"r(truth) ours {row['ours_correlation']:.3f}, ASTRA "
                f"{row['astra_correlation']:.3f}"))
        if "iradon_s_per_slice" in row:
            comparisons.append(_comparison(
                f"WBP per y slice ({row['iradon_slices']} slices, {name.replace('_', ' ')})",
                row["ours_s_per_slice"], "scikit-image iradon", row["iradon_s_per_slice"],
                f"r(truth) on those slices ours {row['ours_correlation_iradon_slices']:.3f}, "
                f"iradon {row['iradon_correlation']:.3f}"))
    r["comparisons"] = comparisons
    first = r[inputs[0]]
    r["summary"] = (f"{'×'.join(map(str, first['shape_zyx']))}: ours {first['ours_s']:.1f} s "
                    f"(r = {first['ours_correlation']:.3f})")
    return r


def stage_training(size: str, params: RunParams, scratch: Path) -> dict:
    """Training-step throughput through ``core.train.train`` (second epoch) and inference."""
    bench = _bench("bench_train")
    name, patch, batch = ("32³ × 4", 32, 4) if size == "small" else ("64³ × 2 (default)", 64, 2)
    steps = 3 if params.mode == "quick" else 10
    from napari_shrec.core.devices import resolve_torch_device

    device = resolve_torch_device("auto")
    r = bench.run(name, {}, patch, batch, steps, device, 0, str(scratch))
    r.update(device=device, steps=steps)
    r["summary"] = (f"{name}: {r['train_patches_per_s']:.2f} patches/s "
                    f"({r['train_s_per_step']:.2f} s/step), inference "
                    f"{r['infer_patches_per_s_batch4']:.1f} patches/s on {device}")
    return r


def stage_detection(size: str, params: RunParams, scratch: Path) -> dict:
    bench = _bench("bench_detect")
    if size == "small":
        r = bench.detect_dataset(_small_dataset(params, scratch))
    else:
        folder = _need(params.test_dataset, "detection")
        crop = (200, 192, 192) if params.mode == "quick" else None
        r = bench.detect_dataset(folder, crop_zyx=crop)
    r["summary"] = (f"{'×'.join(map(str, r['tomogram_zyx']))}: {r['detect_s']:.1f} s, "
                    f"{r['n_patches']} patches, loc F1 {r['loc_F1']:.3f}")
    return r


def stage_template_matching(size: str, params: RunParams, scratch: Path) -> dict:
    bench = _bench("bench_tm")
    quick = params.mode == "quick"
    if size == "small":
        folder = _small_dataset(params, scratch)
        runs = [dict(class_name="4d8q", crop_zyx=(64, 128, 128),
                     angular_step_deg=45.0 if quick else 30.0)]
    else:
        folder = _need(params.test_dataset, "template matching")
        classes = ("4d8q",) if quick else ("4d8q", "1qvr")
        runs = [dict(class_name=c, crop_zyx=(200, 256, 256),
                     angular_step_deg=45.0 if quick else 30.0) for c in classes]
    rows = [bench.compare_with_pytme(folder, threads=2, **kw) for kw in runs]
    comparisons = []
    for row in rows:
        comparisons.append(_comparison(
            f"TM {row['class']}, {'×'.join(map(str, row['crop_zyx']))}, {row['n_angles']} "
            f"rotations, 2 threads", row["ours_s"], f"pyTME {row['pytme_version']} (CPU)",
            row["pytme_s"],
            f"{row['class']} F1 ours {row['ours']['class_F1']:.3f}, pyTME "
            f"{row['pytme']['class_F1']:.3f} (same picking, N = "
            f"{row['class_particles_in_crop']}); score maps r = "
            f"{row['agreement']['score_correlation_interior']:.4f}"))
    r = {"runs": rows, "comparisons": comparisons}
    r["summary"] = "; ".join(f"{row['class']}: {row['ours_per_rotation_ms']:.0f} ms/rotation"
                             for row in rows)
    return r


def stage_scoring(size: str, params: RunParams, scratch: Path) -> dict:
    bench = _bench("bench_score_reference")
    runs = 3 if params.mode == "quick" else 7
    if size == "small":
        r = bench.compare_scorers((64, 128, 128), 150, 200, runs=runs)
    else:
        r = bench.compare_scorers((200, 512, 512), 2600, 2800, runs=runs)
    r["comparisons"] = [_comparison(
        f"score {r['n_predictions']} picks, mask {'×'.join(map(str, r['mask_shape_zyx']))}",
        r["core_s"], "reference (dilate + Python loop)", r["reference_s"],
        f"identical counts: {r['agree']} (TP {r['counts']['TP']}, FP {r['counts']['FP']}, "
        f"MH {r['counts']['MH']})")]
    r["summary"] = f"{r['n_predictions']} picks: {1e3 * r['core_s']:.0f} ms"
    return r


STAGE_FUNCTIONS: dict[str, Callable[[str, RunParams, Path], dict]] = {
    "structures": stage_structures, "grandmodel": stage_grandmodel,
    "tiltseries": stage_tiltseries, "reconstruction": stage_reconstruction,
    "training": stage_training, "detection": stage_detection,
    "template_matching": stage_template_matching, "scoring": stage_scoring,
}


def stage_sizes(stage: str, sizes: Sequence[str]) -> list[str]:
    """The sizes a stage runs at: the structure maps do not depend on the size (one run)."""
    if stage == "structures":
        return list(sizes[-1:])
    return list(sizes)


# --------------------------------------------------------------------------- child / parent
def run_stage_child(stage: str, size: str, params: RunParams, result_path: Path,
                    scratch: Path) -> int:
    """Run one stage in this process and write its record to ``result_path``."""
    start = time.perf_counter()
    result = STAGE_FUNCTIONS[stage](size, params, scratch)
    record = {"result": result, "stage_s": time.perf_counter() - start,
              "peak_rss_mb": _bench("bench_score").peak_rss_mb()}
    result_path.write_text(json.dumps(record, default=json_default), encoding="utf-8")
    return 0


def _child_command(stage: str, size: str, params: RunParams, result: Path,
                   scratch: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks", "_stage", "--stage", stage, "--size", size,
            "--mode", params.mode, "--result", str(result), "--scratch", str(scratch),
            "--small-dataset", str(params.small_dataset),
            "--shrec-dataset", str(params.shrec_dataset),
            "--test-dataset", str(params.test_dataset), "--structures", str(params.structures)]


def run_benchmarks(params: RunParams, *, log: Callable[[str], None] = print,
                   command: str = "") -> dict[str, Any]:
    """Run every (stage, size) of ``params`` in its own process; the results record."""
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    t0 = time.perf_counter()
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="napari_shrec_bench_") as tmp:
        scratch = Path(tmp)
        for stage in params.stages:
            for size in stage_sizes(stage, params.sizes):
                result_path = scratch / f"{stage}_{size}.json"
                log(f"[{stage} / {size}] …")
                start = time.perf_counter()
                proc = subprocess.run(_child_command(stage, size, params, result_path, scratch),
                                      cwd=REPO, capture_output=True, text=True,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                wall = time.perf_counter() - start
                row: dict[str, Any] = {"stage": stage, "size": size, "wall_s": wall}
                if proc.returncode == 0 and result_path.is_file():
                    child = json.loads(result_path.read_text(encoding="utf-8"))
                    result = child["result"]
                    row.update(status="ok", stage_s=child["stage_s"],
                               peak_rss_mb=child["peak_rss_mb"],
                               summary=result.pop("summary", ""), result=result)
                    for c in result.get("comparisons", []):
                        comparisons.append({"stage": stage, "size": size, **c})
                    log(f"[{stage} / {size}] {wall:.1f} s, peak RSS "
                        f"{child['peak_rss_mb']:.0f} MiB: {row['summary']}")
                else:
                    tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or [""]
                    row.update(status="error", error=tail[0][-500:],
                               stderr_tail="\n".join((proc.stderr or "").splitlines()[-15:]))
                    log(f"[{stage} / {size}] FAILED after {wall:.1f} s: {row['error']}")
                rows.append(row)
    return {"schema": SCHEMA, "mode": params.mode, "command": command, "started": started,
            "duration_s": time.perf_counter() - t0, "machine": machine_info(),
            "load_average": {"start": load_start,
                             "end": list(os.getloadavg()) if hasattr(os, "getloadavg")
                             else None},
            "peak_memory_method": PEAK_MEMORY_METHOD,
            "params": {"stages": list(params.stages), "sizes": list(params.sizes),
                       "small_dataset": str(params.small_dataset),
                       "shrec_dataset": str(params.shrec_dataset),
                       "test_dataset": str(params.test_dataset),
                       "structures": str(params.structures)},
            "stages": rows, "comparisons": comparisons}


def write_json_atomic(path: Path, record: dict[str, Any], *, overwrite: bool) -> None:
    """Write ``record`` to ``path`` through a temporary file in the same folder and a rename.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(record, f, indent=1, default=json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Time every napari-shrec stage, with peer comparisons side by side.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,render}")
    run = sub.add_parser("run", help="run the benchmarks and write a results JSON")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="small sizes and cropped SHREC'20 pieces (≤ 10 min; the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="full SHREC'20 sizes (tens of minutes)")
    run.set_defaults(mode="quick")
    run.add_argument("--out", type=Path, default=Path("results.json"),
                     help="results JSON (default results.json; refused if it exists)")
    run.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    run.add_argument("--only", action="append", choices=STAGES, metavar="STAGE",
                     help=f"run only this stage (repeatable): {', '.join(STAGES)}")
    run.add_argument("--size", action="append", choices=SIZES,
                     help="run only this size (repeatable; default both)")
    _dataset_options(run)
    render = sub.add_parser("render", help="Markdown tables from a results JSON (stdout)")
    render.add_argument("results", type=Path)
    child = sub.add_parser("_stage")  # one stage in a fresh process (used by run)
    child.add_argument("--stage", choices=STAGES, required=True)
    child.add_argument("--size", choices=SIZES, required=True)
    child.add_argument("--mode", choices=MODES, required=True)
    child.add_argument("--result", type=Path, required=True)
    child.add_argument("--scratch", type=Path, required=True)
    _dataset_options(child)
    return parser


def _dataset_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--small-dataset", type=Path, default=DEFAULT_SMALL_DATASET,
                        help="small-preset dataset (default %(default)s; simulated if absent)")
    parser.add_argument("--shrec-dataset", type=Path, default=DEFAULT_SHREC_DATASET,
                        help="shrec2020 dataset for reconstruction (default %(default)s)")
    parser.add_argument("--test-dataset", type=Path, default=DEFAULT_TEST_DATASET,
                        help="shrec2020 test tomogram for detection and template matching "
                             "(default %(default)s)")
    parser.add_argument("--structures", type=Path, default=DEFAULT_STRUCTURES,
                        help="structure folder with pdb/ and polnet_maps_10A/ "
                             "(default %(default)s)")


def params_from_args(args: argparse.Namespace) -> RunParams:
    if args.command == "_stage":
        stages, sizes = (args.stage,), (args.size,)
    else:
        stages, sizes = tuple(args.only or STAGES), tuple(args.size or SIZES)
    return RunParams(mode=args.mode, stages=stages, sizes=sizes,
                     small_dataset=args.small_dataset, shrec_dataset=args.shrec_dataset,
                     test_dataset=args.test_dataset, structures=args.structures)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "render":
            from .render import render_markdown

            if not args.results.is_file():
                raise FileNotFoundError(f"{args.results}: no such results file")
            record = json.loads(args.results.read_text(encoding="utf-8"))
            sys.stdout.write(render_markdown(record))
            return 0
        params = params_from_args(args)
        if args.command == "_stage":
            return run_stage_child(args.stage, args.size, params, args.result, args.scratch)
        if args.out.exists() and not args.overwrite:  # refuse before any work
            raise FileExistsError(f"{args.out} exists; pass --overwrite to replace it")
        command = "python -m benchmarks " + " ".join(shlex.quote(a) for a in argv)
        record = run_benchmarks(params, log=lambda m: print(m, flush=True), command=command)
        write_json_atomic(args.out, record, overwrite=args.overwrite)
        failed = [f"{r['stage']}/{r['size']}" for r in record["stages"] if r["status"] != "ok"]
        print(f"wrote {args.out} ({record['duration_s']:.0f} s"
              + (f"; failed: {', '.join(failed)}" if failed else "") + ")")
        return 1 if failed else 0
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
