import subprocess
import sys

import numpy as np
import pytest

from napari_shrec.cli import build_parser, main
from napari_shrec.core.particles import ParticleList
from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.core.rotations import random_rotations
from napari_shrec.io.dataset import write_dataset
from napari_shrec.io.mrc import write_mrc
from napari_shrec.io.particles import read_particles, write_particles


def test_help_lists_the_actions(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for action in ("score", "convert", "info", "view"):
        assert action in out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "napari_shrec.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.startswith("napari-shrec ")


def test_no_action_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "actions" in capsys.readouterr().out


def test_info_describes_mrc_particles_and_dataset(tmp_path, capsys):
    write_mrc(tmp_path / "t.mrc", np.zeros((3, 4, 5), np.float32), voxel_size_nm=1.5)
    phantom = sphere_phantom((16, 40, 40), 6, seed=1)
    write_particles(tmp_path / "p.txt", phantom.particles)
    write_dataset(tmp_path / "ds", particles=phantom.particles,
                  volumes={"occupancy_mask": phantom.occupancy_mask})
    assert main(["info", str(tmp_path / "t.mrc"), str(tmp_path / "p.txt"),
                 str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "shape (z, y, x) (3, 4, 5), float32, voxel size (z, y, x) 1.5 1.5 1.5 nm" in out
    assert f"p.txt: {len(phantom.particles)} particles (shrec" in out
    assert "napari-shrec dataset" in out and "occupancy_mask" in out


def test_convert_txt_to_relion5_and_back(tmp_path, capsys):
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 100, (50, 3))
    from napari_shrec.core.rotations import matrix_to_zxz

    mats = random_rotations(50, rng)
    p = ParticleList.from_arrays(["1bxn"] * 50, coords, matrix_to_zxz(mats))
    write_particles(tmp_path / "in.txt", p)
    args = ["--voxel-size", "1.0", "--tomogram-shape", "100", "100", "50"]
    assert main(["convert", str(tmp_path / "in.txt"), str(tmp_path / "out.star"),
                 "--relion-version", "5", *args]) == 0
    assert main(["convert", str(tmp_path / "out.star"), str(tmp_path / "back.csv"), *args]) == 0
    back = read_particles(tmp_path / "back.csv")
    np.testing.assert_allclose(back.coords_xyz(), coords, atol=1e-6)
    np.testing.assert_allclose(back.rotation_matrices(), mats, atol=1e-6)
    assert "wrote 50 particles" in capsys.readouterr().out


def test_user_errors_are_one_line_with_the_file_name(tmp_path, capsys):
    (tmp_path / "bad.txt").write_text("1s3x 1 2\n")
    assert main(["info", str(tmp_path / "bad.txt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-shrec info: error:") and "bad.txt" in err and "line 1" in err
    write_particles(tmp_path / "ok.txt", ParticleList.from_arrays(["1s3x"], [[1, 2, 3]]))
    (tmp_path / "exists.csv").write_text("keep me")
    assert main(["convert", str(tmp_path / "ok.txt"), str(tmp_path / "exists.csv")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "exists.csv").read_text() == "keep me"
    assert main(["view", str(tmp_path / "missing.mrc")]) == 2


def test_parser_builds_without_napari():
    parser = build_parser()
    assert parser.prog == "napari-shrec"
