"""Score reports (text tables, JSON, CSV, plots) and ``napari-shrec score`` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from napari_shrec.core.particles import ParticleList
from napari_shrec.core.score import ScoreParams, score_submission
from napari_shrec.core.score_report import (
    format_class_f1_table,
    format_localization_table,
    format_report,
    format_size_group_table,
    plot_paths,
    results_to_frame,
    results_to_json,
    write_csv,
    write_json,
    write_plots,
)
from napari_shrec.io.mrc import write_mrc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def plist(rows) -> ParticleList:
    return ParticleList.from_arrays([r[0] for r in rows], [r[1:4] for r in rows])


def _case():
    # 2×2×2 cubes at x = 1, 6, 11 (y = z = 3); classes 4d8q, 1s3x, 3qm1 (file order ≠ weight)
    mask = np.zeros((8, 8, 16), np.int16)
    for i, x in enumerate((1, 6, 11), start=1):
        mask[3:5, 3:5, x:x + 2] = i
    gt = plist([("4d8q", 1.5, 3.5, 3.5), ("1s3x", 6.5, 3.5, 3.5), ("3qm1", 11.5, 3.5, 3.5)])
    return mask, gt


@pytest.fixture
def results():
    mask, gt = _case()
    a = score_submission(gt, mask, plist([("4d8q", 1, 3, 3), ("1s3x", 6, 3, 3),
                                          ("1s3x", 0, 0, 0)]), submission_name="alpha")
    b = score_submission(gt, mask, plist([("3qm1", 11, 3, 3)]), submission_name="beta")
    return [a, b]


# --------------------------------------------------------------------------- tables
def test_localization_table_has_paper_columns_and_one_row_per_submission(results):
    text = format_localization_table(results)
    lines = text.splitlines()
    assert lines[0].split()[:7] == ["Submission", "RR", "TP", "FP", "FN", "MH", "RO"]
    assert "Miss rate" in lines[0] and "F1 Score" in lines[0]
    assert lines[2].split()[:7] == ["alpha", "3", "2", "1", "1", "0", "0"]
    # alpha: recall 2/3, precision 2/3 → F1 0.667; AD = √0.75 = 0.866
    assert lines[2].split()[7:] == ["0.866", "0.667", "0.667", "0.333", "0.667"]
    assert lines[3].startswith("beta")


def test_class_table_orders_classes_by_weight_and_drops_absent_ones(results):
    text = format_class_f1_table(results)
    header = text.splitlines()[0].split()
    assert header == ["Submission", "1s3x", "3qm1", "4d8q", "mean", "macro+bg"]
    alpha = text.splitlines()[2].split()
    # 1s3x 1, 3qm1 missed → 0, 4d8q 1; mean 2/3; macro (1+0+1+missed 0)/4 = 0.5
    assert alpha == ["alpha", "1.000", "0.000", "1.000", "0.667", "0.500"]


def test_size_group_table(results):
    lines = format_size_group_table(results).splitlines()
    assert lines[0].split() == ["Submission", "Small", "Medium", "Large"]
    assert lines[2].split() == ["alpha", "0.500", "-", "1.000"]
    assert "Table 3" in format_report(results) and "Table 6" in format_report(results)


# --------------------------------------------------------------------------- JSON / CSV
def test_json_is_a_list_with_the_documented_keys(results, tmp_path):
    path = write_json(tmp_path / "s.json", results)
    data = json.loads(path.read_text())
    assert isinstance(data, list) and [d["submission"] for d in data] == ["alpha", "beta"]
    required = {"submission", "RR", "TP", "FP", "FN", "MH", "RO", "AD", "recall", "precision",
                "miss_rate", "F1", "per_class_F1", "mean_class_F1", "F1_macro_with_background",
                "size_group_F1", "confusion"}
    assert required <= set(data[0])
    assert data[0]["per_class_F1"]["1s3x"] == 1.0 and data[0]["per_class_F1"]["1bxn"] is None
    conf = data[0]["confusion"]
    assert conf["rows"][0] == "1s3x" and conf["columns"][-1] == "missed"
    assert data == results_to_json(results)
    with pytest.raises(FileExistsError):
        write_json(tmp_path / "s.json", results)
    write_json(tmp_path / "s.json", results, overwrite=True)


def test_csv_one_flat_row_per_submission(results, tmp_path):
    path = write_csv(tmp_path / "s.csv", results)
    frame = pd.read_csv(path)
    assert frame["submission"].tolist() == ["alpha", "beta"]
    for col in ("RR", "F1", "mean_class_F1", "F1_macro_with_background", "F1_small",
                "F1_1s3x", "loc_F1_4d8q"):
        assert col in frame.columns
    assert frame.loc[0, "TP"] == 2 and np.isnan(frame.loc[0, "F1_1bxn"])
    assert results_to_frame(results).shape[0] == 2


# --------------------------------------------------------------------------- plots
def test_plots_are_pngs_and_refuse_overwrite(results, tmp_path):
    paths = write_plots(results, tmp_path / "plots")
    assert [p.name for p in paths] == ["alpha_confusion.png", "beta_confusion.png",
                                       "f1_vs_weight.png"]
    for p in paths:
        assert p.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(FileExistsError):
        write_plots(results, tmp_path / "plots")
    write_plots(results, tmp_path / "plots", overwrite=True)
    assert [p.name for p in plot_paths(["a/b", "a b", "a/b"], tmp_path)] == [
        "a_b_confusion.png", "a_b_2_confusion.png", "a_b_3_confusion.png", "f1_vs_weight.png"]


def test_plotting_leaves_pyplot_alone(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "from napari_shrec.core.particles import ParticleList\n"
        "from napari_shrec.core.score import score_submission\n"
        "from napari_shrec.core.score_report import write_plots\n"
        "m = np.zeros((4, 4, 4), np.int16); m[1, 1, 1] = 1\n"
        "gt = ParticleList.from_arrays(['1s3x'], [[1, 1, 1]])\n"
        "r = score_submission(gt, m, gt)\n"
        f"write_plots([r], {str(tmp_path)!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- CLI
@pytest.fixture
def files(tmp_path):
    pytest.importorskip("napari_shrec.io.particles")
    mask, _ = _case()
    write_mrc(tmp_path / "occupancy_mask.mrc", mask)
    (tmp_path / "particle_locations.txt").write_text(
        "4d8q 1.5 3.5 3.5 0 0 0\n1s3x 6.5 3.5 3.5 0 0 0\n3qm1 11.5 3.5 3.5 0 0 0\n")
    (tmp_path / "alpha.txt").write_text("4d8q 1 3 3\n1s3x 6 3 3\n1s3x 0 0 0\n")
    (tmp_path / "beta.txt").write_text("3qm1 11 3 3 0 0 0 0.9 extra\n")
    (tmp_path / "bad.txt").write_text("# header\n4d8q 1 3 3\nribosome 6 3 3\n")
    return tmp_path


def _main(argv):
    from napari_shrec.cli import main

    return main(argv)


def test_cli_scores_files_in_either_order_with_all_outputs(files, capsys):
    argv = ["score", "--gt", str(files / "occupancy_mask.mrc"),
            str(files / "particle_locations.txt"), str(files / "alpha.txt"),
            str(files / "beta.txt"), "--json", str(files / "out.json"), "--csv",
            str(files / "out.csv"), "--plots", str(files / "plots")]
    assert _main(argv) == 0
    out, err = capsys.readouterr()
    assert "Table 3" in out and "Table 4" in out and "Table 6" in out
    assert "alpha" in out and "beta" in out
    data = json.loads((files / "out.json").read_text())
    assert [d["submission"] for d in data] == ["alpha", "beta"]
    assert (data[0]["TP"], data[0]["FP"], data[0]["FN"]) == (2, 1, 1)
    assert data[0]["mode"] == "native"
    assert pd.read_csv(files / "out.csv").shape[0] == 2
    assert (files / "plots" / "f1_vs_weight.png").read_bytes()[:8] == PNG_MAGIC
    assert "\r" not in err  # no progress bar when stderr is not a terminal
    # the same with the GT files in the other order and the submission before --gt
    assert _main(["score", str(files / "beta.txt"), "--gt", str(files / "particle_locations.txt"),
                  str(files / "occupancy_mask.mrc")]) == 0


def test_cli_refuses_to_overwrite_outputs_before_scoring(files, capsys):
    (files / "out.json").write_text("keep")
    argv = ["score", "--gt", str(files / "particle_locations.txt"),
            str(files / "occupancy_mask.mrc"), str(files / "alpha.txt"),
            "--json", str(files / "out.json")]
    assert _main(argv) == 2
    out, err = capsys.readouterr()
    assert "already exists" in err and "Traceback" not in err and out == ""
    assert (files / "out.json").read_text() == "keep"
    assert _main(argv + ["--overwrite"]) == 0
    assert json.loads((files / "out.json").read_text())[0]["submission"] == "alpha"


def test_cli_unknown_labels_name_file_and_line(files, capsys):
    argv = ["score", "--gt", str(files / "particle_locations.txt"),
            str(files / "occupancy_mask.mrc"), str(files / "bad.txt")]
    assert _main(argv) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("napari-shrec score: error:")
    assert "bad.txt" in err and "'ribosome' (line 3)" in err and "Traceback" not in err
    assert _main(argv + ["--unknown-as-misclassified", "--json", str(files / "u.json")]) == 0
    data = json.loads((files / "u.json").read_text())[0]
    assert data["confusion"]["columns"][-1] == "unknown"


def test_cli_errors_exit_2_without_traceback(files, capsys):
    gt = ["--gt", str(files / "particle_locations.txt"), str(files / "occupancy_mask.mrc")]
    for argv in (["score", *gt, str(files / "missing.txt")],
                 ["score", *gt],
                 ["score", "--gt", str(files / "nofolder"), str(files / "alpha.txt")],
                 ["score", "--gt", str(files / "alpha.txt"), str(files / "beta.txt")]):
        assert _main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "error:" in err and "Traceback" not in err
    (files / "broken.txt").write_text("1s3x 1 2\n")
    assert _main(["score", *gt, str(files / "broken.txt")]) == 2
    assert "broken.txt" in capsys.readouterr().err


def test_cli_dataset_folders_pick_the_mode(tmp_path, capsys):
    pytest.importorskip("napari_shrec.io.dataset")
    from napari_shrec.io.dataset import write_dataset

    # a SHREC'20-like folder: 200-slice mask, lower-case labels, no simulation.json → shrec2020
    folder = tmp_path / "model_9"
    folder.mkdir()
    mask = np.zeros((200, 8, 8), np.float32)
    mask[10:12, 2:4, 2:4] = 1
    mask[100:102, 5:7, 5:7] = 2
    write_mrc(folder / "occupancy_mask.mrc", mask)
    (folder / "particle_locations.txt").write_text(
        "1s3x 2 2 10 0 0 0\n4d8q 5 5 100 0 0 0\n")
    (tmp_path / "sub512.txt").write_text("1s3x 2 2 166\n4d8q 5 5 256\n")
    (tmp_path / "sub200.txt").write_text("1s3x 2 2 10\n4d8q 5 5 100\n")
    assert _main(["score", "--gt", str(folder), str(tmp_path / "sub512.txt"),
                  str(tmp_path / "sub200.txt"), "--json", str(tmp_path / "s20.json")]) == 0
    err = capsys.readouterr().err
    assert "mode shrec2020" in err and "added 156" in err
    data = json.loads((tmp_path / "s20.json").read_text())
    assert [d["mode"] for d in data] == ["shrec2020", "shrec2020"]
    assert [d["TP"] for d in data] == [2, 2] and [d["z_shift"] for d in data] == [0, 156]

    # a napari-shrec dataset → native
    gt = plist([("1s3x", 2, 2, 10), ("4d8q", 5, 5, 100)])
    write_dataset(tmp_path / "sim", particles=gt, volumes={"occupancy_mask": mask})
    assert _main(["score", "--gt", str(tmp_path / "sim"), str(tmp_path / "sub200.txt"),
                  "--json", str(tmp_path / "sim.json")]) == 0
    data = json.loads((tmp_path / "sim.json").read_text())
    assert data[0]["mode"] == "native" and data[0]["TP"] == 2


def test_cli_shrec2021_dataset(tmp_path, capsys):
    pytest.importorskip("napari_shrec.io.dataset")
    folder = tmp_path / "model_9"
    folder.mkdir()
    mask = np.zeros((12, 8, 20), np.float32)
    for i, x in enumerate((1, 6, 11, 16), start=1):
        mask[3:5, 3:5, x:x + 2] = i
    write_mrc(folder / "occupancy_mask.mrc", mask)
    (folder / "particle_locations.txt").write_text(
        "1S3X 1 3 3 0 0 0\n4V94 6 3 3 0 0 0\nvesicle 11 3 3 0 0 0\nfiducial 16 3 3 0 0 0\n")
    (tmp_path / "sub.txt").write_text("1S3X 1 3 3\n4V94 6 3 3\nfiducial 16 3 3\n")
    assert _main(["score", "--gt", str(folder), str(tmp_path / "sub.txt"),
                  "--json", str(tmp_path / "s.json")]) == 0
    d = json.loads((tmp_path / "s.json").read_text())[0]
    # N_gt = 4 − 1 (4V94); the vesicle stays: recall 2/3
    assert d["mode"] == "shrec2021" and d["N_gt"] == 3 and d["TP"] == 2 and d["ignored"] == 1
    assert d["recall"] == pytest.approx(2 / 3)


def test_score_params_round_trip_through_the_cli_flags(files):
    from napari_shrec.cli import build_parser

    args = build_parser().parse_args(["score", "--gt", "a.txt", "b.mrc", "s.txt", "--mode",
                                      "shrec2020", "--z-offset", "100", "--no-z-shift"])
    assert args.gt == ["a.txt", "b.mrc", "s.txt"] and args.mode == "shrec2020"
    assert ScoreParams(mode=args.mode, z_offset=args.z_offset,
                       auto_z_shift=not args.no_z_shift).z_offset == 100
