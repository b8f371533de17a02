"""The paper's published tables as data, and scripts/reproduce_shrec20.py's pieces: the ground
truth cut to a window, the report section replaced between its markers, the realism check."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_shrec.core.paper_results import (
    CLASSES,
    METHODS,
    TABLE3_LOCALIZATION,
    TABLE4_CLASS_F1,
    TABLE6_SIZE_GROUP_F1,
    TABLE8_TM_CLASS_F1,
    class_f1_row,
    rank_correlation,
)
from napari_shrec.core.particles import ParticleList

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reproduce_shrec20.py"


def _script():
    spec = importlib.util.spec_from_file_location("reproduce_shrec20", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reproduce_shrec20"] = module
    spec.loader.exec_module(module)
    return module


def test_paper_tables_are_internally_consistent() -> None:
    assert set(TABLE3_LOCALIZATION) == set(METHODS) == set(TABLE4_CLASS_F1) \
        == set(TABLE6_SIZE_GROUP_F1)
    for method, row in TABLE3_LOCALIZATION.items():
        # F1 is the harmonic mean of the printed recall and precision (3 decimals)
        f1 = 2 * row["recall"] * row["precision"] / (row["recall"] + row["precision"])
        assert row["f1"] == pytest.approx(f1, abs=2e-3), method
        # recall = TP / 2782 particles in model_9 … within the paper's rounding
        assert row["TP"] / 2782 == pytest.approx(row["recall"], abs=0.03), method
    assert TABLE3_LOCALIZATION["UMC"]["f1"] == 0.949
    assert TABLE4_CLASS_F1["UMC"]["1s3x"] == 0.661
    assert TABLE4_CLASS_F1["TM-F"]["4d8q"] == 0.945
    # the appendix prints 3qm1 before 1s3x: the mapping is by name
    assert TABLE8_TM_CLASS_F1["TM-F-2020"]["3qm1"] == 0.064
    assert TABLE8_TM_CLASS_F1["TM-F-2020"]["1s3x"] == 0.169
    assert class_f1_row("TM-T", ["4cr2", "1s3x"]) == [0.968, 0.2]
    with pytest.raises(KeyError, match="no per-class row 'nope'"):
        class_f1_row("nope")


def test_rank_correlation_against_the_paper() -> None:
    paper = dict(TABLE4_CLASS_F1["TM-F"])
    rho, n = rank_correlation(paper, "TM-F")
    assert (rho, n) == (pytest.approx(1.0), 12)
    reversed_ranks = {c: -v for c, v in paper.items()}
    assert rank_correlation(reversed_ranks, "TM-F")[0] == pytest.approx(-1.0)
    # NaN (a class absent from both sides) is skipped; under 3 classes gives NaN
    partial = {"1s3x": 0.1, "4cr2": float("nan"), "4d8q": 0.9}
    rho, n = rank_correlation(partial, "TM-F")
    assert n == 2 and math.isnan(rho)


def test_crop_ground_truth_renumbers_the_window() -> None:
    script = _script()
    occupancy = np.zeros((4, 10, 10), dtype=np.int32)
    occupancy[1:3, 1:3, 1:3] = 1     # outside the window
    occupancy[1:3, 5:8, 5:8] = 2     # inside
    occupancy[1:3, 8:10, 3:5] = 3    # cut by the window's border (y 8, 9 inside)
    table = pd.DataFrame({"class_name": ["4d8q", "1bxn", "4cr2"],
                          "x": [1.5, 6.0, 4.0], "y": [1.5, 6.0, 9.0], "z": [1.5, 1.5, 1.5]})
    truth = ParticleList(table, voxel_size_nm=1.0)
    box = (0, 4, 4, 10, 4, 10)
    cut, mask = script.crop_ground_truth(truth, occupancy, box)
    assert list(cut.table["class_name"]) == ["1bxn", "4cr2"]
    assert mask.shape == (4, 6, 6)
    assert set(np.unique(mask)) == {0, 1, 2}
    assert mask[1, 2, 2] == 1 and mask[1, 5, 0] == 2     # renumbered 2 → 1, 3 → 2
    np.testing.assert_allclose(cut.table[["x", "y", "z"]].to_numpy(),
                               [[2.0, 2.0, 1.5], [0.0, 5.0, 1.5]])
    picks = ParticleList(pd.DataFrame({"class_name": ["1bxn", "4d8q"], "x": [6.0, 1.0],
                                       "y": [6.0, 1.0], "z": [1.0, 1.0]}), voxel_size_nm=1.0)
    inside = script._in_box(picks, box)
    assert list(inside.table["class_name"]) == ["1bxn"]
    assert inside.table[["x", "y", "z"]].to_numpy().tolist() == [[2.0, 2.0, 1.0]]


def test_report_section_is_replaced_between_markers(tmp_path: Path) -> None:
    script = _script()
    results_md = tmp_path / "results.md"
    results_md.write_text("# Results\n\nhand-written part\n", encoding="utf-8")
    script.write_section(results_md, "first run")
    script.write_section(results_md, "second run")
    text = results_md.read_text(encoding="utf-8")
    assert text.count(script.BEGIN) == 1 and text.count(script.END) == 1
    assert "hand-written part" in text and "second run" in text and "first run" not in text
    results_md.write_text(text + "\nmore notes after\n", encoding="utf-8")
    script.write_section(results_md, "third run")
    text = results_md.read_text(encoding="utf-8")
    assert "more notes after" in text and "third run" in text and "second run" not in text


def test_the_tables_name_every_class_of_the_paper() -> None:
    assert CLASSES[0] == "1s3x" and CLASSES[-1] == "4d8q" and len(set(CLASSES)) == 12


def test_window_gets_the_papers_n_in_proportion_to_its_particles() -> None:
    script = _script()
    assert script.PAPER_N == 217  # 2600 expected particles / 12 classes (paper, section 3.7)
    assert script.window_n(2526, 2526) == 217  # the whole tomogram
    assert script.window_n(718, 2526) == 62  # the central 256 × 256 window of the test run
    assert script.window_n(0, 2526) == 1
