"""Time the structure library and check its potentials against gemmi's.

Run:  python benchmarks/bench_structures.py [--structures ../shared/structures] [--json OUT]

1. Builds all 12 SHREC'20 maps at 1 nm from the shared PDB files and PolNet maps into an empty
   cache (targets: < 60 s cold, < 1 s cached), then again from the cache.
2. For each atomic model, compares napari-shrec's voxel-integrated potential
   (:func:`potential_from_atoms`, erf integration) with gemmi's ``DensityCalculatorE`` (Peng
   electron form factors, point-sampled) run two ways on the same grid: at the 1 nm voxel
   centres, and on a 10× finer grid block-averaged to 1 nm (a brute-force voxel average). It
   reports the time of each, the scale factor gemmi → volts (expected: K = 47.878 V·Å²), the
   correlation and the relative RMS difference to ours.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

DEFAULT_STRUCTURES = Path(__file__).resolve().parents[2] / "shared" / "structures"


def _gemmi_voxel_map(path: Path, assembly: str, n: int, voxel_a: float, centre_xyz_a: np.ndarray,
                     subsample: int) -> tuple[np.ndarray, float]:
    """gemmi's point-sampled potential on our box; ``subsample`` > 1 block-averages."""
    import gemmi

    from napari_shrec.core.atomic_model import _is_ion

    structure = gemmi.read_structure(str(path))
    structure.setup_entities()
    structure.remove_waters()
    for chain in structure[0]:  # drop ions as napari-shrec does, for a like-for-like comparison
        for index in reversed(range(len(chain))):
            if _is_ion(chain[index]):
                del chain[index]
    model = structure[0]
    if assembly != "deposited":
        chosen = next(a for a in structure.assemblies if a.name == assembly)
        model = gemmi.make_assembly(chosen, model, gemmi.HowToNameCopiedChain.AddNumber)
    # Grid point j sits at j · voxel / subsample; voxel k of our box spans
    # [(k − 0.5), (k + 0.5)] · voxel around centre + (k − n//2) · voxel.
    shift = -centre_xyz_a + (n // 2) * voxel_a + 0.5 * voxel_a - 0.5 * voxel_a / subsample
    for chain in model:
        for residue in chain:
            for atom in residue:
                atom.pos = gemmi.Position(atom.pos.x + shift[0], atom.pos.y + shift[1],
                                          atom.pos.z + shift[2])
    calculator = gemmi.DensityCalculatorE()
    edge = n * voxel_a
    calculator.grid.unit_cell = gemmi.UnitCell(edge, edge, edge, 90, 90, 90)
    calculator.grid.spacegroup = gemmi.SpaceGroup("P1")
    calculator.grid.set_size(n * subsample, n * subsample, n * subsample)
    calculator.blur = 0.0
    calculator.cutoff = 1e-5
    start = time.perf_counter()
    calculator.put_model_density_on_grid(model)
    elapsed = time.perf_counter() - start
    values = np.array(calculator.grid, copy=True).transpose(2, 1, 0)  # (x, y, z) → (z, y, x)
    if subsample > 1:
        s = subsample
        values = values.reshape(n, s, n, s, n, s).mean(axis=(1, 3, 5))
    return values, elapsed


def _compare(ours: np.ndarray, theirs: np.ndarray) -> dict[str, float]:
    scale = float(ours.sum(dtype=np.float64) / theirs.sum(dtype=np.float64))
    scaled = theirs * scale
    return {"scale_to_volts": scale,
            "correlation": float(np.corrcoef(scaled.ravel(), ours.ravel())[0, 1]),
            "relative_rms": float(np.sqrt(((scaled - ours) ** 2).mean()) / ours.std())}


def time_library(sources: list[Path], names: list[str] | None = None) -> dict:
    """Build the SHREC'20 maps (or ``names``) at 1 nm from ``sources`` into an empty cache
    (cold), then again from that cache; {"cold_s", "cached_s", "n_maps", "kinds"}."""
    from napari_shrec.core.structures import StructureFallbackWarning, StructureLibrary

    with tempfile.TemporaryDirectory() as cache, warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFallbackWarning)
        start = time.perf_counter()
        maps = StructureLibrary(sources, cache_dir=cache, download=False).build(names)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        StructureLibrary(sources, cache_dir=cache, download=False).build(names)
        cached = time.perf_counter() - start
    return {"cold_s": cold, "cached_s": cached, "n_maps": len(maps),
            "kinds": {name: m.kind for name, m in maps.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=Path, default=DEFAULT_STRUCTURES)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from napari_shrec.core.atomic_model import read_atomic_model
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.core.potential import potential_from_atoms

    sources = [args.structures / "pdb", args.structures / "polnet_maps_10A"]
    results: dict = {"machine": {"python": platform.python_version(),
                                 "processor": platform.processor() or platform.machine()}}
    results["build_all_12"] = time_library(sources)
    cold, cached = results["build_all_12"]["cold_s"], results["build_all_12"]["cached_s"]
    print(f"all 12 maps at 1 nm: cold {cold:.2f} s (target < 60 s), cached {cached:.3f} s "
          f"(target < 1 s)")
    print(f"  kinds: {results['build_all_12']['kinds']}")

    print(f"\n{'class':<6} {'atoms':>6} {'ours s':>7} {'gemmi1 s':>8} {'gemmi10 s':>9} "
          f"{'K→V':>7} {'r(1nm pt)':>9} {'rms':>6} {'r(10×avg)':>9} {'rms':>6}")
    rows = {}
    for cls in SHREC20_TABLE:
        path = args.structures / "pdb" / f"{cls.name}.pdb"
        if not path.is_file():
            continue
        model = read_atomic_model(path, expected_mass_kda=cls.weight_kda,
                                  implicit_hydrogens=False)  # gemmi adds no hydrogens
        start = time.perf_counter()
        ours, _ = potential_from_atoms(model, voxel_size_nm=1.0)
        ours_s = time.perf_counter() - start
        n = ours.shape[0]
        centre = model.centre_of_mass_xyz_a()
        point, point_s = _gemmi_voxel_map(path, model.assembly, n, 10.0, centre, 1)
        fine, fine_s = _gemmi_voxel_map(path, model.assembly, n, 10.0, centre, 10)
        row = {"atoms": model.n_atoms, "ours_s": ours_s, "gemmi_point_s": point_s,
               "gemmi_fine_s": fine_s, "gemmi_point": _compare(ours, point),
               "gemmi_fine_block_average": _compare(ours, fine)}
        rows[cls.name] = row
        print(f"{cls.name:<6} {model.n_atoms:>6} {ours_s:>7.3f} {point_s:>8.3f} {fine_s:>9.3f} "
              f"{row['gemmi_fine_block_average']['scale_to_volts']:>7.2f} "
              f"{row['gemmi_point']['correlation']:>9.3f} "
              f"{row['gemmi_point']['relative_rms']:>6.2f} "
              f"{row['gemmi_fine_block_average']['correlation']:>9.4f} "
              f"{row['gemmi_fine_block_average']['relative_rms']:>6.3f}")
    results["vs_gemmi"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
