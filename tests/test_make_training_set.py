"""scripts/make_training_set.py: fixed seeds, a train/test split, and resuming without redoing."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_training_set.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_training_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_training_set_is_seeded_and_resumable(tmp_path: Path, capsys) -> None:
    script = _script()
    empty = tmp_path / "no-structures"
    empty.mkdir()
    out = tmp_path / "set"
    argv = ["--out", str(out), "--tomograms", "2", "--preset", "small", "--first-seed", "77",
            "--structures", str(empty), "--device", "cpu"]
    assert script.main(argv) == 0
    record = json.loads((out / "set.json").read_text())
    assert [(t["folder"], t["seed"], t["role"]) for t in record["tomograms"]] == [
        ("model_0", 77, "train"), ("model_1", 78, "test")]
    for index, seed in ((0, 77), (1, 78)):
        simulation = json.loads((out / f"model_{index}" / "simulation.json").read_text())
        assert simulation["seed"] == seed and simulation["params"]["preset"] == "small"
    first = (out / "model_1" / "projections.mrc").read_bytes()
    capsys.readouterr()

    # A second run does no work; an interrupted folder (no simulation.json) is redone.
    (out / "model_1" / "simulation.json").unlink()
    assert script.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "model_0: done earlier (seed 77)"
    assert lines[1].startswith("model_1: seed 78,")
    assert (out / "model_1" / "projections.mrc").read_bytes() == first  # same seed, same data
