"""The benchmark runner (benchmarks/): CLI, results JSON, Markdown, the reference scorer, and the
rotation convention handed to pyTME."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import runner  # noqa: E402
from benchmarks.bench_score_reference import (  # noqa: E402
    compare_scorers,
    core_score,
    reference_score,
    same_result,
)
from benchmarks.render import render_markdown  # noqa: E402


# --------------------------------------------------------------------------- CLI
def _params(argv: list[str]) -> runner.RunParams:
    return runner.params_from_args(runner.build_parser().parse_args(argv))


def test_cli_defaults_and_choices() -> None:
    p = _params(["run"])
    assert p.mode == "quick" and p.stages == runner.STAGES and p.sizes == runner.SIZES
    p = _params(["run", "--full", "--only", "scoring", "--only", "structures",
                 "--size", "small", "--out", "r.json"])
    assert p.mode == "full"
    assert p.stages == ("structures", "scoring")  # pipeline order, not argument order
    assert p.sizes == ("small",)
    child = _params(["_stage", "--stage", "scoring", "--size", "shrec2020", "--mode", "full",
                     "--result", "x.json", "--scratch", "/tmp"])
    assert child.stages == ("scoring",) and child.sizes == ("shrec2020",)
    assert runner.stage_sizes("structures", ("small", "shrec2020")) == ["shrec2020"]
    assert runner.stage_sizes("scoring", ("small", "shrec2020")) == ["small", "shrec2020"]


@pytest.mark.parametrize("argv", [["run", "--quick", "--full"], ["run", "--only", "nope"],
                                  ["run", "--size", "huge"], []])
def test_cli_rejects_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        runner.build_parser().parse_args(argv)


def test_run_params_validate() -> None:
    with pytest.raises(ValueError, match="mode"):
        runner.RunParams(mode="medium")
    with pytest.raises(ValueError, match="stage"):
        runner.RunParams(stages=("scoring", "dancing"))


def test_run_refuses_existing_output_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "results.json"
    out.write_text("keep me")
    assert runner.main(["run", "--only", "training", "--out", str(out)]) == 2
    assert out.read_text() == "keep me"
    assert "--overwrite" in capsys.readouterr().err


def test_render_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert runner.main(["render", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_write_json_atomic(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "r.json"
    runner.write_json_atomic(out, {"a": np.float32(1.5), "b": np.arange(2)}, overwrite=False)
    assert json.loads(out.read_text()) == {"a": 1.5, "b": [0, 1]}
    with pytest.raises(FileExistsError, match="r.json"):
        runner.write_json_atomic(out, {"a": 2}, overwrite=False)
    runner.write_json_atomic(out, {"a": 2}, overwrite=True)
    assert json.loads(out.read_text()) == {"a": 2}
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temporary left


# --------------------------------------------------------------------------- a real run
def test_run_writes_results_json_and_render(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    code = runner.main(["run", "--quick", "--only", "scoring", "--size", "small",
                        "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())
    assert record["schema"] == runner.SCHEMA and record["mode"] == "quick"
    assert "--only scoring" in record["command"]
    machine = record["machine"]
    assert machine["cores"] >= 1 and machine["ram_gb"] > 0 and machine["cpu"]
    for package in ("numpy", "scipy", "torch", "astra-toolbox", "pytme"):
        assert package in machine["versions"]
    assert machine["versions"]["numpy"] == np.__version__
    assert len(record["load_average"]["start"]) == 3
    [row] = record["stages"]
    assert (row["stage"], row["size"], row["status"]) == ("scoring", "small", "ok")
    assert 50 < row["peak_rss_mb"] < 4000 and row["wall_s"] >= row["stage_s"] > 0
    result = row["result"]
    assert result["agree"] is True and result["mask_shape_zyx"] == [64, 128, 128]
    assert result["counts"]["RR"] == result["n_predictions"]
    [comparison] = record["comparisons"]
    assert comparison["stage"] == "scoring" and comparison["peer_s"] > 0
    assert comparison["ratio"] == pytest.approx(comparison["peer_s"] / comparison["ours_s"])

    text = render_markdown(record)
    assert text.startswith("# Benchmarks")
    assert "This is a `--quick` run" in text
    assert "python -m benchmarks run --quick --out results.json" in text
    assert f"**{comparison['ratio']:.2f}×**" in text
    assert "| scoring | small | ok |" in text
    assert runner.main(["render", str(out)]) == 0


def test_render_full_run_and_failed_stage() -> None:
    record = {"mode": "full", "command": "python -m benchmarks run --full",
              "machine": {"cpu": "X", "versions": {"numpy": "2"}},
              "stages": [{"stage": "detection", "size": "shrec2020", "status": "error",
                          "wall_s": 1.0, "error": "FileNotFoundError: no | dataset"}],
              "comparisons": []}
    text = render_markdown(record)
    assert "--quick" not in text.split("## Machine")[0].replace("run --full", "")
    assert "| detection | shrec2020 | error | 1.00 s | – | FileNotFoundError: no \\| dataset |" \
        in text
    assert "No peer comparison" in text


# --------------------------------------------------------------------------- reference scorer
def test_reference_scorer_counts_by_hand() -> None:
    mask = np.zeros((10, 12, 14), dtype=np.float32)
    mask[2:4, 2:4, 2:4] = 1  # particle 1 (x, y, z ≈ 2.5)
    mask[6:8, 7:9, 9:11] = 2  # particle 2
    mask[1, 10, 12] = 3  # particle 3, never hit
    gt_names = ["1bxn", "4d8q", "3cf3"]
    gt_xyz = np.array([[2.5, 2.5, 2.5], [9.5, 7.5, 6.5], [12.0, 10.0, 1.0]])
    pred_names = ["1bxn", "4d8q", "1bxn", "3cf3", "4d8q"]
    pred_xyz = np.array([[3, 3, 3],  # TP on 1
                         [10, 8, 7],  # TP on 2
                         [11, 7, 6],  # second hit on 2 (dilated by one voxel): MH
                         [0, 11, 9],  # background: FP
                         [20.0, 8, 7]])  # outside in x: clipped (RO) onto x = 13 → background
    ref = reference_score(mask, gt_names, gt_xyz, pred_names, pred_xyz)
    assert {k: ref[k] for k in ("RR", "TP", "FP", "FN", "MH", "RO")} == \
        {"RR": 5, "TP": 2, "FP": 2, "FN": 1, "MH": 1, "RO": 1}
    assert ref["confusion"] == {"1bxn->1bxn": 1, "4d8q->4d8q": 1, "3cf3->missed": 1}
    assert same_result(ref, core_score(mask, gt_names, gt_xyz, pred_names, pred_xyz))


def test_reference_scorer_equals_core_on_synthetic_data() -> None:
    r = compare_scorers((40, 96, 96), 120, 160, runs=1, seed=3)
    assert r["agree"] is True
    assert r["counts"]["TP"] > 50 and r["counts"]["FP"] > 0 and r["counts"]["MH"] > 0
    assert r["core_s"] > 0 and r["speedup"] == pytest.approx(r["reference_s"] / r["core_s"])


# --------------------------------------------------------------------------- pyTME convention
def _asymmetric_template(n: int = 21) -> np.ndarray:
    z, y, x = np.mgrid[:n, :n, :n] - n // 2
    t = np.zeros((n, n, n), dtype=np.float32)
    for (cz, cy, cx), s, a in (((0, 0, 0), 2.5, 1.0), ((0, 0, 5), 1.8, 0.8),
                               ((0, 4, 0), 1.5, 0.6), ((3, -2, -1), 1.2, 0.5)):
        t += a * np.exp(-((z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
    return t


def test_pytme_rotation_convention_finds_planted_template() -> None:
    pytest.importorskip("tme")
    from scipy import ndimage

    from benchmarks.bench_tm import affine_matrices_zyx, run_ours, run_pytme
    from napari_shrec.core.tm import MatchParams, prepare_template
    from napari_shrec.core.tm_angles import uniform_angles

    template = _asymmetric_template()
    n, c = template.shape[0], template.shape[0] // 2
    angles = uniform_angles(60.0)[::7][:10]  # 10 distinct rotations
    true_row = 6
    m = affine_matrices_zyx(angles[true_row])[0]
    rotated = ndimage.affine_transform(template, m, offset=c - m @ np.full(3, c), order=3)
    rng = np.random.default_rng(0)
    volume = rng.normal(0, 0.02, (40, 44, 48)).astype(np.float32)
    pz, py, px = 19, 23, 26
    volume[pz - c:pz - c + n, py - c:py - c + n, px - c:px - c + n] += rotated

    params = MatchParams(ctf=False, tilt_range_deg=None, device="cpu", threads=1)
    prepared = prepare_template(template, params)
    scores, index, _seconds = run_pytme(volume, prepared, None, angles, jobs=1)
    assert scores.shape == volume.shape
    peak = np.unravel_index(np.argmax(scores), scores.shape)
    assert tuple(int(v) for v in peak) == (pz, py, px)
    assert index[peak] == true_row
    assert scores[peak] > 0.95
    # ours agrees with pyTME on the same inputs
    ours, ours_index, _s, _t = run_ours(volume, template, params, angles, 1.0)
    assert np.unravel_index(np.argmax(ours), ours.shape) == peak
    assert ours_index[peak] == true_row
    h = prepared.edge // 2
    inner = (slice(h, -h),) * 3
    assert np.abs(ours[inner] - scores[inner]).max() < 1e-3
