"""Simulate a SHREC'20-style set of tomograms with fixed seeds: model_0 … model_{N-1}.

Usage:
    python scripts/make_training_set.py --out DIR [--tomograms 10] [--preset shrec2020]
        [--first-seed 1000] [--validation 0] [--snr S] [--structures DIR ...] [--device auto]

Like the SHREC'20 release, the last model is the test tomogram; before it come ``--validation``
models for choosing checkpoints and thresholds, and the rest are for training.
``DIR/set.json`` records which seed made which folder and that split. Seeds are
``first_seed + index``; pick a ``--first-seed`` that no evaluation set uses. The script is
resumable: a folder that already holds a finished simulation (its ``simulation.json`` with the
expected seed and preset) is skipped; a folder without it (an interrupted run) is simulated again,
replacing its partial files.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"


def _finished(folder: Path, seed: int, preset: str, snr: float | None = None) -> bool:
    record_path = folder / "simulation.json"
    if not record_path.is_file():
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    from napari_shrec.core.tiltseries import IMAGE_SNR_PER_SNR, TiltSeriesParams

    params = record.get("params") or {}
    wanted_snr = TiltSeriesParams().snr if snr is None else snr
    if ((params.get("tiltseries") or {}).get("snr")) != wanted_snr:
        return False
    # simulations from before the SNR calibration (no factor recorded) were noisier at the
    # same number: not the tomogram asked for
    if record.get("image_snr_per_snr") != IMAGE_SNR_PER_SNR:
        return False
    return record.get("seed") == seed and params.get("preset") == preset


def _role(index: int, n_tomograms: int, n_validation: int) -> str:
    if index == n_tomograms - 1:
        return "test"
    if index >= n_tomograms - 1 - n_validation:
        return "validation"
    return "train"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tomograms", type=int, default=10)
    parser.add_argument("--preset", default="shrec2020", choices=("shrec2020", "small"))
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--validation", type=int, default=0,
                        help="how many models before the test model are for validation")
    parser.add_argument("--structures", action="append", type=Path, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--snr", type=float, default=None,
                        help="override the preset's SNR (paper scale: the image ratio "
                        "var(noise-free image) / var(noise) is 75 × SNR)")
    args = parser.parse_args(argv)
    if args.tomograms < 1:
        parser.error("--tomograms must be ≥ 1")
    if not 0 <= args.validation <= max(0, args.tomograms - 2):
        parser.error("--validation must leave at least one training and one test model")

    from napari_shrec.core.simulate import run_simulation, simulation_params
    from napari_shrec.io._atomic import write_text_atomic

    sources = args.structures or [p for p in (DEFAULT_STRUCTURES / "pdb",
                                              DEFAULT_STRUCTURES / "polnet_maps_10A")
                                  if p.is_dir()]
    args.out.mkdir(parents=True, exist_ok=True)
    entries = []
    for index in range(args.tomograms):
        seed = args.first_seed + index
        folder = args.out / f"model_{index}"
        role = _role(index, args.tomograms, args.validation)
        entries.append({"folder": folder.name, "seed": seed, "role": role})
        if _finished(folder, seed, args.preset, args.snr):
            print(f"{folder.name}: done earlier (seed {seed})", flush=True)
            continue
        overrides = {} if args.snr is None else {"snr": args.snr}
        params = simulation_params(args.preset, seed=seed, structure_sources=sources,
                                   download_structures=False, device=args.device, **overrides)
        start = time.perf_counter()
        result = run_simulation(params, folder, overwrite=True)
        print(f"{folder.name}: seed {seed}, {result.grandmodel.report.n_placed} particles, "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    record = {"preset": args.preset, "first_seed": args.first_seed, "snr": args.snr,
              "structure_sources": [str(s) for s in sources], "tomograms": entries}
    write_text_atomic(args.out / "set.json", json.dumps(record, indent=1) + "\n",
                      overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
