"""``napari-shrec demo``: the whole chain (simulate → reconstruct → U-Net and TM-F → score)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_shrec.cli import main
from napari_shrec.demo import (
    DEMO_MARKER,
    TM_SUBMISSION,
    UNET_SUBMISSION,
    DemoParams,
    check_demo_folder,
    default_demo_folder,
    run_demo,
)
from napari_shrec.io.particles import read_particles


@pytest.fixture(autouse=True)
def _own_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No user settings file; the device default is the CPU."""
    monkeypatch.setenv("NAPARI_SHREC_SETTINGS", str(tmp_path / "settings.json"))
    monkeypatch.setenv("NAPARI_SHREC_DEVICE", "cpu")
    monkeypatch.delenv("NAPARI_SHREC_STRUCTURES", raising=False)


def _table(text: str, title: str) -> list[str]:
    """The lines of the table under ``title`` (header first, dashes dropped)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    rows = []
    for line in lines[start:]:
        if not line.strip():
            break
        if not set(line.replace(" ", "")) <= {"-"}:
            rows.append(line)
    return rows


def test_tiny_demo_through_the_cli_scores_both_submissions(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--seed", "1", "--shape", "32", "64", "64",
                 "--classes", "4d8q,1bxn", "--tm-step", "60"])
    text = capsys.readouterr().out
    assert code == 0

    # stage timings, then both paper tables with both submissions and every simulated class
    assert "Stage timings" in text
    for stage in ("simulate", "reconstruct", "detect: 3D U-Net", "template matching: TM-F",
                  "score", "total"):
        assert stage in text
    assert "2 classes x 72 rotations on cpu" in text
    localization = _table(text, "Localization (paper Table 3")
    assert localization[0].split()[:3] == ["Submission", "RR", "TP"]
    assert [r.startswith(UNET_SUBMISSION) for r in localization[1:]] == [True, False]
    assert localization[2].startswith(TM_SUBMISSION)
    per_class = _table(text, "Classification F1 per class")
    assert {"1bxn", "4d8q"} <= set(per_class[0].split())
    assert len(per_class) == 3

    # the files, and scores that agree with them
    assert (out / DEMO_MARKER).is_file()
    dataset = out / "dataset"
    for name in ("reconstruction.mrc", "class_mask.mrc", "occupancy_mask.mrc",
                 "particle_locations.txt", "simulation.json"):
        assert (dataset / name).is_file(), name
    truth = read_particles(dataset / "particle_locations.txt")
    assert 3 <= len(truth) <= 5  # the small preset's 30-40 particles scaled by 1/8
    assert set(truth.class_names) <= {"4d8q", "1bxn"}
    scores = json.loads((out / "scores.json").read_text())
    assert [s["submission"] for s in scores] == [UNET_SUBMISSION, TM_SUBMISSION]
    for entry, picks in zip(scores, ("unet_picks.txt", "tm_picks.txt"), strict=True):
        assert entry["N_gt"] == len(truth)
        assert entry["RR"] == len(read_particles(out / picks))
        assert entry["TP"] + entry["FN"] == len(truth)
    summary = json.loads((out / "demo.json").read_text())
    assert summary["tm_rotations_per_class"] == 72
    assert summary["params"]["shape_zyx"] == [32, 64, 64]
    assert set(summary["timings_s"]) == {"simulate", "reconstruct", "detect", "match",
                                         "score", "total"}
    assert summary["timings_s"]["total"] >= summary["timings_s"]["match"] > 0
    assert f"napari-shrec view {dataset}" in text


def test_out_refuses_a_folder_with_other_files_before_any_work(tmp_path: Path, capsys) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "not a napari-shrec demo folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written

    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert main(["demo", "--out", str(a_file)]) == 2
    assert "is a file" in capsys.readouterr().err


def test_demo_folder_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_demo_folder(tmp_path / "new") == tmp_path / "new"  # missing: fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert check_demo_folder(empty) == empty
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / DEMO_MARKER).write_text("")
    (earlier / "scores.json").write_text("[]")
    assert check_demo_folder(earlier) == earlier  # an earlier demo may be replaced
    (empty / "x.mrc").write_text("")
    with pytest.raises(FileExistsError, match="not a napari-shrec demo folder"):
        check_demo_folder(empty)
    with pytest.raises(FileExistsError):
        run_demo(DemoParams(), empty)

    monkeypatch.setenv("NAPARI_SHREC_CACHE_DIR", str(tmp_path / "cache"))
    first = default_demo_folder()
    assert first.parent == tmp_path / "cache" / "demo" and not first.exists()


def test_bad_parameters_fail_clearly(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="tm_angular_step_deg"):
        DemoParams(tm_angular_step_deg=0)
    with pytest.raises(ValueError, match="device"):
        DemoParams(device="gpu")
    with pytest.raises(ValueError, match="unknown preset"):
        DemoParams(preset="huge").simulation()
    assert DemoParams(shape_zyx=(32, 64, 64)).simulation().grandmodel.n_particles == (4, 5)
    assert main(["demo", "--out", str(tmp_path / "d"), "--shape", "8", "64", "64"]) == 2
    assert "--shape" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--structures",
                 str(tmp_path / "absent")]) == 2
    assert "--structures" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_default_demo_prints_every_class(tmp_path: Path) -> None:
    """The README's main job as shipped: the small preset with all 12 classes (~2 min)."""
    from napari_shrec.core.classes import SHREC20_TABLE
    from napari_shrec.demo import format_demo_report

    result = run_demo(DemoParams(device="cpu"), tmp_path / "demo")
    assert [r.submission for r in result.scores] == [UNET_SUBMISSION, TM_SUBMISSION]
    assert 30 <= result.n_particles <= 40
    assert result.tm_rotations == 168
    text = format_demo_report(result)
    header = _table(text, "Classification F1 per class")[0].split()
    assert set(SHREC20_TABLE.names) <= set(header)


def test_view_opens_the_dataset_and_both_pick_lists(tmp_path: Path, monkeypatch) -> None:
    """``--view``: napari with the plugin's widgets, the dataset folder and both pick lists."""
    napari = pytest.importorskip("napari")
    from napari_shrec import _cli_demo, _viewer

    opened: list[tuple[str, str]] = []

    class FakeViewer:
        def __init__(self, title: str) -> None:
            self.title = title

        def open(self, path: str, plugin: str) -> None:
            opened.append((path, plugin))

    docked: list[object] = []
    monkeypatch.setattr(napari, "Viewer", FakeViewer)
    monkeypatch.setattr(napari, "run", lambda: None)
    monkeypatch.setattr(_viewer, "dock_plugin_widgets", docked.append)
    picks = [tmp_path / "unet_picks.txt", tmp_path / "tm_picks.txt"]
    assert _cli_demo.view_demo(tmp_path / "dataset", picks) == 0
    assert len(docked) == 1 and docked[0].title == "napari-shrec demo"
    assert opened == [(str(tmp_path / "dataset"), "napari-shrec"),
                      (str(picks[0]), "napari-shrec"), (str(picks[1]), "napari-shrec")]
