"""Reproduce the SHREC'20 study on this machine and write the results next to the paper's.

    python scripts/reproduce_shrec20.py --out DIR [--tomograms 10] [--first-seed 2000]
        [--snr S] [--model PATH | --train] [--tm-angular-step DEG] [--tm-crop NY NX]
        [--classes a,b,...] [--results docs/results.md] [--device auto]

Stages, each resumable (a finished stage's output is kept and skipped when run again):

1. ``simulate``: ``--tomograms`` shrec2020-preset tomograms with seeds ``first_seed + i``
   (``scripts/make_training_set.py``): model_0 … model_{N-2} for training, the last for testing,
   as the SHREC'20 release (with ``--train``, model_{N-2} validates).
2. ``unet``: the learned detector on the test tomogram — the shipped model (default), the
   checkpoint ``--model``, or one trained here with ``--train``
   (``scripts/train_default_model.py`` on this set; hours on a CPU).
3. ``tm``: template matching of every class (``napari_shrec.core.tm_classes.match_classes``:
   FLCF, CTF- and wedge-filtered templates of the simulation's own structures), one class at a
   time (``DIR/reproduce/tm/<class>.npz``, resumable per class), then TM-T (thresholded) and
   TM-F (filtered) selections with the paper's N (217 per class for the whole tomogram; for a
   window, 217 × the share of the tomogram's particles it holds). ``--tm-crop NY NX``
   matches a central y–x window of the sample slab only (the paper's full protocol, 12 classes
   at their Crowther steps on 512 × 512 × 200, takes days on a 2-core CPU); every method is then
   scored on that window, with the ground truth cut to it.
4. ``score``: the three submissions against the test tomogram's ground truth, ``native`` mode.
5. ``report``: Tables 3, 4, 6 and 7 with the paper's rows, the realism check (Spearman rank
   correlation of our template-matching per-class F1 with the paper's over the 12 classes), and
   Fig. 11/12-style plots (``docs/images/reproduce_*.png``), written into ``--results`` between
   the markers ``<!-- reproduce_shrec20:begin -->`` and ``<!-- reproduce_shrec20:end -->``
   (the rest of the file is kept; the markers are appended when absent). ``DIR/reproduce/
   report.md`` holds the same section.

Timings of every stage, the machine and the command line are in ``DIR/reproduce/run.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

BEGIN = "<!-- reproduce_shrec20:begin -->"
END = "<!-- reproduce_shrec20:end -->"
SUBMISSIONS = ("3D U-Net", "TM-T", "TM-F")


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="working folder (datasets, outputs)")
    p.add_argument("--tomograms", type=int, default=10, help="tomograms to simulate (≥ 1)")
    p.add_argument("--first-seed", type=int, default=2000,
                   help="seed of model_0 (the shipped model trained on 1000–1003: keep clear)")
    p.add_argument("--preset", default="shrec2020", choices=("shrec2020", "small"),
                   help="simulation preset (small: a quick check of the whole script)")
    p.add_argument("--snr", type=float, default=None, help="override the preset's SNR")
    p.add_argument("--structures", action="append", type=Path, default=None)
    p.add_argument("--model", type=Path, default=None,
                   help="detector checkpoint (default: the model shipped with napari-shrec)")
    p.add_argument("--train", action="store_true",
                   help="train the detector on this set first (scripts/train_default_model.py)")
    p.add_argument("--tm-angular-step", type=float, default=None,
                   help="degrees (default: each class's Crowther step)")
    p.add_argument("--tm-crop", type=int, nargs=2, default=None, metavar=("NY", "NX"),
                   help="match a central y-x window of this size only")
    p.add_argument("--classes", default=None, help="comma-separated classes (default: all 12)")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results.md")
    p.add_argument("--no-results", action="store_true", help="do not edit --results")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    return p


# --------------------------------------------------------------------------- stages


def stage_simulate(args: argparse.Namespace) -> dict[str, list[Path]]:
    import make_training_set

    argv = ["--out", str(args.out), "--tomograms", str(args.tomograms), "--preset", args.preset,
            "--first-seed", str(args.first_seed), "--validation", "1" if args.train else "0",
            "--device", args.device]
    if args.snr is not None:
        argv += ["--snr", str(args.snr)]
    for s in args.structures or []:
        argv += ["--structures", str(s)]
    if make_training_set.main(argv) != 0:
        raise SystemExit("simulation failed")
    record = json.loads((args.out / "set.json").read_text(encoding="utf-8"))
    roles: dict[str, list[Path]] = {"train": [], "validation": [], "test": []}
    for entry in record["tomograms"]:
        roles[entry["role"]].append(args.out / entry["folder"])
    if not roles["test"]:
        raise SystemExit(f"{args.out / 'set.json'}: no test tomogram")
    return roles


def stage_train(args: argparse.Namespace, work: Path) -> Path:
    import train_default_model

    ship = work / "trained_unet.pt"
    if not ship.exists():
        argv = ["--set", str(args.out), "--work", str(work / "train"), "--ship", str(ship),
                "--device", args.device, "--stage", "all"]
        if train_default_model.main(argv) != 0:
            raise SystemExit("training failed")
    return ship


def _test_box(test: Path, crop: list[int] | None) -> tuple[int, int, int, int, int, int]:
    """(z0, z1, y0, y1, x0, x1) in the grandmodel frame: the slab, and the central y–x window."""
    from napari_shrec.io.dataset import load_dataset

    ds = load_dataset(test)
    nz, ny, nx = ds.headers["occupancy_mask"]["shape_zyx"]
    if crop is None:
        return 0, nz, 0, ny, 0, nx
    cy, cx = min(int(crop[0]), ny), min(int(crop[1]), nx)
    y0, x0 = (ny - cy) // 2, (nx - cx) // 2
    return 0, nz, y0, y0 + cy, x0, x0 + cx


def stage_unet(args: argparse.Namespace, test: Path, work: Path, model_path: Path | None) -> dict:
    from napari_shrec.core.pretrained import detect_with_model, load_model
    from napari_shrec.io.dataset import load_dataset
    from napari_shrec.io.particles import write_particles

    out = work / "unet.txt"
    record_path = work / "unet.json"
    if out.exists() and record_path.exists():
        _log("unet: done earlier")
        return json.loads(record_path.read_text(encoding="utf-8"))
    model = load_model(model_path, device=args.device)
    ds = load_dataset(test)
    recon = ds.read_volume("reconstruction")
    z0 = int(ds.grandmodel_z_offset)
    nz = ds.headers["occupancy_mask"]["shape_zyx"][0]
    start = time.perf_counter()
    result = detect_with_model(recon, model, slab_z=(z0, z0 + nz), voxel_size_nm=ds.voxel_size_nm)
    elapsed = time.perf_counter() - start
    particles = result.particles.copy()
    particles.table["z"] = particles.table["z"] - z0
    write_particles(out, particles, overwrite=True)
    record = {"model": str(model_path or "shipped"), "seconds": elapsed,
              "picks": len(particles), "device": str(getattr(model, "device", args.device))}
    record_path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    _log(f"unet: {len(particles)} picks in {elapsed:.0f} s")
    return record


def _classes(args: argparse.Namespace) -> list[str]:
    from napari_shrec.core.classes import normalize_class_name
    from napari_shrec.core.paper_results import CLASSES

    if not args.classes:
        return list(CLASSES)
    return [normalize_class_name(c) for c in args.classes.split(",") if c.strip()]


def stage_tm(args: argparse.Namespace, test: Path, work: Path,
             box: tuple[int, ...]) -> dict[str, Any]:
    from napari_shrec.core.tm_classes import simulated_microscope
    from napari_shrec.core.tm import MatchParams
    from napari_shrec.core.tm_classes import dataset_templates, match_classes
    from napari_shrec.core.tm_select import Candidates, SelectParams
    from napari_shrec.io.dataset import load_dataset

    tm_dir = work / "tm"
    tm_dir.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(test)
    simulation = ds.simulation
    z_off = int(ds.grandmodel_z_offset)
    z0, z1, y0, y1, x0, x1 = box
    recon = ds.read_volume("reconstruction")
    volume = np.ascontiguousarray(
        np.asarray(recon.data[z0 + z_off:z1 + z_off, y0:y1, x0:x1], dtype=np.float32))
    tilts = ds.tilt_angles_deg
    tilt_range = (float(min(tilts)), float(max(tilts))) if tilts is not None and len(tilts) \
        else (-60.0, 60.0)
    params = MatchParams(angular_step_deg=args.tm_angular_step, tilt_range_deg=tilt_range,
                         device=args.device, **simulated_microscope(simulation))
    classes = _classes(args)
    info: dict[str, Any] = {}
    candidates = []
    for name in classes:
        path = tm_dir / f"{name}.npz"
        if not path.exists():
            templates = dataset_templates([name], simulation, ds.voxel_size_nm, download=False)
            start = time.perf_counter()
            result = match_classes(volume, [name], params, SelectParams(),
                                   templates=templates, voxel_size_nm=ds.voxel_size_nm)
            seconds = time.perf_counter() - start
            c = result.candidates[name]
            class_info = {k: v for k, v in result.class_info[name].items()
                          if isinstance(v, (int, float, str, bool))}
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, coords_zyx=c.coords_zyx, scores=c.scores,
                     angles_zxz_deg=c.angles_zxz_deg,
                     meta=json.dumps({"radius_vox": c.radius_vox, "score_median": c.score_median,
                                      "score_sigma": c.score_sigma, "n_voxels": c.n_voxels,
                                      "weight_kda": c.weight_kda, "seconds": seconds,
                                      "info": class_info}))
            os.replace(tmp, path)
            _log(f"tm: {name}: {class_info.get('angles')} rotations, {len(c)} candidates, "
                 f"{seconds:.0f} s")
        with np.load(path) as npz:
            meta = json.loads(str(npz["meta"]))
            candidates.append(Candidates(
                class_name=name, coords_zyx=npz["coords_zyx"], scores=npz["scores"],
                angles_zxz_deg=npz["angles_zxz_deg"], radius_vox=float(meta["radius_vox"]),
                score_median=float(meta["score_median"]),
                score_sigma=float(meta["score_sigma"]), n_voxels=int(meta["n_voxels"]),
                weight_kda=meta["weight_kda"]))
        info[name] = {"seconds": meta["seconds"], **meta["info"]}
    return {"candidates": candidates, "classes": info, "shape_zyx": list(volume.shape),
            "seconds": float(sum(v["seconds"] for v in info.values()))}


#: the paper's N for TM-T/TM-F: 2600 expected particles / 12 classes, for the whole tomogram
PAPER_N = 217


def window_n(n_in_window: int, n_in_tomogram: int) -> int:
    """N per class for a ``--tm-crop`` window: the paper's N for the whole tomogram, given to the
    window in proportion to the tomogram's particles it holds (counted as the scoring counts
    them: every particle that reaches into it). Scaling N by the window's area instead would
    starve a central window, which holds more than its area's share (particles straddling its
    edges count, and the tomogram's margins hold fewer)."""
    return max(1, int(round(PAPER_N * n_in_window / max(1, n_in_tomogram))))


def _select(candidates: list, strategy: str, box: tuple[int, ...], voxel_nm: float,
            expected: int | None = None):
    from napari_shrec.core.tm_select import SelectParams, select_particles

    picks = select_particles(candidates, SelectParams(strategy=strategy, expected=expected),
                             voxel_size_nm=voxel_nm)
    picks = picks.copy()
    z0, _, y0, _, x0, _ = box
    picks.table["z"] = picks.table["z"] + z0
    picks.table["y"] = picks.table["y"] + y0
    picks.table["x"] = picks.table["x"] + x0
    return picks


def crop_ground_truth(particles, occupancy: np.ndarray, box: tuple[int, ...]):
    """The ground truth inside ``box`` (z0, z1, y0, y1, x0, x1): every particle whose occupancy
    reaches into the box, renumbered 1…n in the cropped mask, coordinates shifted into it."""
    from napari_shrec.core.particles import ParticleList

    z0, z1, y0, y1, x0, x1 = box
    cut = np.asarray(occupancy[z0:z1, y0:y1, x0:x1])
    ids = np.unique(cut)
    ids = ids[(ids > 0) & (ids <= len(particles))]
    lookup = np.zeros(int(max(cut.max(initial=0), len(particles))) + 1, dtype=np.int32)
    lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    kept = particles.subset(ids - 1)
    table = kept.table.copy()
    table[["x", "y", "z"]] = table[["x", "y", "z"]].to_numpy() - np.array([x0, y0, z0])
    return ParticleList(table, voxel_size_nm=kept.voxel_size_nm, metadata=dict(kept.metadata)), \
        lookup[cut]


def _in_box(picks, box: tuple[int, ...]):
    """Picks inside ``box``, shifted into it."""
    z0, z1, y0, y1, x0, x1 = box
    t = picks.table
    inside = ((t["z"] >= z0) & (t["z"] < z1) & (t["y"] >= y0) & (t["y"] < y1)
              & (t["x"] >= x0) & (t["x"] < x1)).to_numpy()
    kept = picks.subset(np.flatnonzero(inside))
    kept = kept.copy()
    kept.table["z"] -= z0
    kept.table["y"] -= y0
    kept.table["x"] -= x0
    return kept


def stage_score(test: Path, work: Path, tm: dict[str, Any], box: tuple[int, ...]) -> list:
    from napari_shrec.core.score import ScoreParams, score_submission
    from napari_shrec.io.dataset import load_dataset, scoring_ground_truth
    from napari_shrec.io.particles import read_particles, write_particles

    ds = load_dataset(test)
    gt = scoring_ground_truth(ds)
    truth, occupancy = crop_ground_truth(gt.particles, gt.occupancy_mask, box)
    whole = tuple(box) == (0, *gt.occupancy_mask.shape[:1], 0, gt.occupancy_mask.shape[1], 0,
                           gt.occupancy_mask.shape[2])
    expected = None if whole else window_n(len(truth), len(gt.particles))
    tm["n_per_class"] = PAPER_N if whole else expected
    submissions = {"3D U-Net": read_particles(work / "unet.txt")}
    for name, strategy in (("TM-T", "thresholded"), ("TM-F", "filtered")):
        picks = _select(tm["candidates"], strategy, box, ds.voxel_size_nm, expected)
        write_particles(work / f"{name.lower().replace('-', '_')}.txt", picks, overwrite=True)
        submissions[name] = picks
    results = []
    for name in SUBMISSIONS:
        results.append(score_submission(truth, occupancy, _in_box(submissions[name], box),
                                        ScoreParams(mode="native"), class_table=gt.class_table,
                                        submission_name=name))
    return results


# --------------------------------------------------------------------------- report


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _machine() -> str:
    import torch

    cores = os.cpu_count()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem = float("nan")
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {cores} cores, {mem:.0f} GiB RAM, "
            f"{gpu}, Python {platform.python_version()}, PyTorch {torch.__version__}")


def _hms(seconds: float) -> str:
    if seconds != seconds:
        return "–"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h {m:02d}m" if h else (f"{m}m {s:02d}s" if m else f"{s}s")


def render_report(results: list, run: dict[str, Any], images: dict[str, str]) -> str:
    from napari_shrec.core.paper_results import (
        CLASSES,
        TABLE3_LOCALIZATION,
        TABLE4_CLASS_F1,
        TABLE6_SIZE_GROUP_F1,
        TABLE7_TIMINGS,
        rank_correlation,
    )

    by_name = {r.submission: r for r in results}
    out = [f"_Generated by `{run['command']}` on {run['date']} ({run['machine']}). "
           f"Compute time of the stages: simulation of the test tomogram "
           f"{_hms(run['simulate_s'])}, 3D U-Net {_hms(run['unet_s'])}, template matching "
           f"{_hms(run['tm_s'])} (each stage's own time, from its record; a resumed run reuses "
           "finished stages)._", ""]
    test = run["test"]
    out += [f"Test tomogram: `{test['folder']}` (seed {test['seed']}, SNR {test['snr']:g}, "
            f"{test['particles']} particles"
            + (f"; scored on the central {test['box']} window: {test['particles_in_box']} "
               "particles" if test.get("cropped") else "") + "). Template matching: "
            + run["tm_summary"] + ".", ""]
    loc_cols = ["RR", "TP", "FP", "FN", "MH", "RO", "AD", "recall", "precision", "miss_rate",
                "F1"]
    rows = []
    for name in SUBMISSIONS:
        r = by_name[name]
        rows.append([f"**{name} (ours)**"] + [_f(getattr(r, c)) for c in loc_cols])
    for method, row in TABLE3_LOCALIZATION.items():
        rows.append([f"{method} (paper)"] + [_f(row[c.lower() if c == "F1" else c])
                                             for c in loc_cols])
    out += ["### Localization (Table 3)", "",
            _md_table(["submission", "RR", "TP", "FP", "FN", "MH", "RO", "AD", "recall",
                       "precision", "miss rate", "F1"], rows), ""]
    rows = []
    for name in SUBMISSIONS:
        f1 = by_name[name].per_class_F1
        rows.append([f"**{name} (ours)**"] + [_f(f1.get(c)) for c in CLASSES])
    for method in ("UMC", "DeepFinder", "TM-T", "TM-F"):
        rows.append([f"{method} (paper)"] + [_f(TABLE4_CLASS_F1[method][c]) for c in CLASSES])
    out += ["### Classification F1 per class (Table 4)", "",
            _md_table(["submission", *CLASSES], rows), ""]
    rows = []
    for name in SUBMISSIONS:
        groups = by_name[name].size_group_F1
        rows.append([f"**{name} (ours)**"] + [_f(groups.get(g)) for g in
                                              ("small", "medium", "large")])
    for method, values in TABLE6_SIZE_GROUP_F1.items():
        rows.append([f"{method} (paper)"] + [_f(v) for v in values])
    out += ["### F1 per size group (Table 6)", "",
            _md_table(["submission", "small", "medium", "large"], rows), ""]
    rows = [["3D U-Net (ours)", run["training"], _hms(run["unet_s"]) + " (whole slab)"],
            ["TM-T/TM-F (ours)", "N/A", _hms(run["tm_s"]) + f" ({run['tm_summary']})"]]
    rows += [[f"{m} (paper)", t, i] for m, (t, i) in TABLE7_TIMINGS.items()]
    out += ["### Timings (Table 7)", "", f"Ours on {run['machine']}.", "",
            _md_table(["method", "training", "inference"], rows), ""]
    out += ["### Realism check: template matching's per-class pattern", "",
            "Spearman rank correlation over the classes between our per-class F1 and the "
            "paper's (Table 4), for the same method:", ""]
    rows = []
    for name in ("TM-F", "TM-T"):
        rho, n = rank_correlation(by_name[name].per_class_F1, name)
        rows.append([name, _f(rho), str(n)])
    out += [_md_table(["method", "Spearman ρ", "classes"], rows), ""]
    if images:
        out += ["### Plots (Fig. 11 and 12 style)", ""]
        out += [f"![{label}]({path})" for label, path in images.items()]
        out += [""]
    return "\n".join(out)


def write_section(results_md: Path, section: str) -> None:
    text = results_md.read_text(encoding="utf-8") if results_md.exists() else "# Results\n"
    block = (f"{BEGIN}\n## Reproducing the SHREC'20 study (`scripts/reproduce_shrec20.py`)\n\n"
             f"{section}\n{END}")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    tmp = results_md.with_suffix(".md.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, results_md)


def _plots(results: list, results_md: Path) -> dict[str, str]:
    from napari_shrec.core.score_report import confusion_figure, f1_vs_weight_figure, save_figure

    images_dir = results_md.parent / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {}
    fig = f1_vs_weight_figure(results)
    path = save_figure(fig, images_dir / "reproduce_f1_vs_weight.png", overwrite=True)
    out["F1 against molecular weight (Fig. 11)"] = os.path.relpath(path, results_md.parent)
    for r in results:
        stem = r.submission.lower().replace(" ", "_").replace("-", "_")
        fig = confusion_figure(r)
        path = save_figure(fig, images_dir / f"reproduce_confusion_{stem}.png", overwrite=True)
        out[f"Confusion matrix, {r.submission} (Fig. 12)"] = os.path.relpath(
            path, results_md.parent)
    return out


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.tomograms < (3 if args.train else 1):
        raise SystemExit("--tomograms: need ≥ 1 (≥ 3 with --train)")
    if args.model is not None and not args.model.is_file():
        raise SystemExit(f"--model {args.model}: no such file")
    t0 = time.perf_counter()
    work = args.out / "reproduce"
    work.mkdir(parents=True, exist_ok=True)
    roles = stage_simulate(args)
    test = roles["test"][0]
    model_path = stage_train(args, work) if args.train else args.model
    unet = stage_unet(args, test, work, model_path)
    box = _test_box(test, args.tm_crop)
    tm = stage_tm(args, test, work, box)
    results = stage_score(test, work, tm, box)

    from napari_shrec.core.score_report import format_report, write_json
    from napari_shrec.io.dataset import load_dataset

    write_json(work / "scores.json", results, overwrite=True)
    print(format_report(results))
    ds = load_dataset(test)
    record = ds.simulation or {}
    snr = ((record.get("params") or {}).get("tiltseries") or {}).get("snr", float("nan"))
    steps = sorted({round(float(v.get("angular_step_deg", float("nan"))), 2)
                    for v in tm["classes"].values()})
    angles = sorted({int(v.get("angles", 0)) for v in tm["classes"].values()})
    cropped = args.tm_crop is not None
    run = {
        "command": "python scripts/reproduce_shrec20.py " + " ".join(argv or sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"), "machine": _machine(),
        "wall_s": time.perf_counter() - t0,
        "unet_s": float(unet["seconds"]), "tm_s": float(tm["seconds"]),
        "simulate_s": float((record.get("timings_s") or {}).get("total_before_writing",
                                                                 float("nan"))),
        "training": "trained here" if args.train else (
            "the shipped model" if args.model is None else str(args.model)),
        "tm_summary": (f"{len(tm['classes'])} classes, angular step "
                       f"{'/'.join(map(str, steps))}° ({'/'.join(map(str, angles))} rotations), "
                       f"searched {' × '.join(map(str, tm['shape_zyx']))} voxels, "
                       f"N = {tm.get('n_per_class', PAPER_N)} per class"),
        "test": {"folder": test.name, "seed": record.get("seed"), "snr": float(snr),
                 "particles": len(ds.particles), "cropped": cropped,
                 "box": f"{box[3] - box[2]} × {box[5] - box[4]}",
                 "particles_in_box": int(results[0].N_gt)},
    }
    (work / "run.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    images = {} if args.no_results else _plots(results, args.results)
    section = render_report(results, run, images)
    (work / "report.md").write_text(section + "\n", encoding="utf-8")
    if not args.no_results:
        write_section(args.results, section)
        _log(f"wrote the reproduction section of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
