"""napari readers and writers of napari-shrec, through napari's own plugin machinery.

Most tests use a bare ``napari.components.ViewerModel`` (no GL canvas, fine on the offscreen Qt
platform): ``ViewerModel.open(path, plugin="napari-shrec")`` runs the same npe2 reader code path as
the GUI. One test opens the same files in a real ``napari.Viewer`` in a subprocess on the Xvfb
display that pytest-xvfb starts (the test session's QApplication may be on the offscreen platform,
where vispy gets no OpenGL context).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.napari
napari = pytest.importorskip("napari")

from napari_shrec import _reader  # noqa: E402
from napari_shrec.core.classes import (  # noqa: E402
    SHREC20_RELEASED_MASK_IDS,
    SHREC21_TABLE,
)
from napari_shrec.core.particles import ParticleList  # noqa: E402
from napari_shrec.core.phantom import sphere_phantom  # noqa: E402
from napari_shrec.io.mrc import MrcReadError, read_mrc, write_mrc  # noqa: E402

particles_io = pytest.importorskip("napari_shrec.io.particles")

VOXEL_NM = 0.8


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module", autouse=True)
def _plugins():
    """Make sure npe2 knows the installed napari-shrec manifest (the Viewer does this itself)."""
    import npe2

    pm = npe2.PluginManager.instance()
    pm.discover(include_npe1=False)
    pm.get_manifest("napari-shrec")  # KeyError if the package is not installed


@pytest.fixture
def vm():
    from napari.components import ViewerModel

    viewer = ViewerModel()
    yield viewer
    viewer.layers.clear()


@pytest.fixture
def tomogram(tmp_path) -> Path:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(12, 24, 32)).astype(np.float32)
    path = tmp_path / "tomo_01.mrc"
    write_mrc(path, data, voxel_size_nm=VOXEL_NM)
    return path


def _particle_list() -> ParticleList:
    return ParticleList.from_arrays(
        ["1s3x", "4d8q", "1bxn", "1s3x"],
        [[3.0, 4.0, 5.0], [10.0, 11.0, 2.0], [20.0, 5.0, 7.5], [1.0, 1.0, 1.0]],
        [[10.0, 20.0, 30.0], [0.0, 45.0, 0.0], [90.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        voxel_size_nm=VOXEL_NM,
    )


def _released(class_mask: np.ndarray) -> np.ndarray:
    """Our class ids → the released SHREC'20 numbering, as float32 like the real files."""
    name_to_released = {name: k for k, name in SHREC20_RELEASED_MASK_IDS.items()}
    out = np.zeros(class_mask.shape, dtype=np.float32)
    for cls in SHREC21_TABLE:
        if cls.name in name_to_released:
            out[class_mask == cls.id] = name_to_released[cls.name]
    return out


@pytest.fixture(scope="module")
def shrec20_folder(tmp_path_factory):
    """A small SHREC'20-style folder: 20×64×64 grandmodel-frame volumes (float32 masks in the
    released numbering), a 52-slice reconstruction (slab offset (52 − 20) / 2 = 16) and a
    ``particle_locations.txt``."""
    pytest.importorskip("napari_shrec.io.dataset")
    folder = tmp_path_factory.mktemp("shrec") / "model_0"
    folder.mkdir()
    ph = sphere_phantom((20, 64, 64), 12, seed=5)
    write_mrc(folder / "class_mask.mrc", _released(ph.class_mask), voxel_size_nm=1.0)
    write_mrc(folder / "occupancy_mask.mrc", ph.occupancy_mask.astype(np.float32),
              voxel_size_nm=1.0)
    write_mrc(folder / "grandmodel.mrc", ph.density, voxel_size_nm=1.0)
    write_mrc(folder / "reconstruction.mrc", np.zeros((52, 64, 64), np.float32), voxel_size_nm=1.0)
    lines = [f"{r.class_name} {int(r.x)} {int(r.y)} {int(r.z)} "
             f"{r.phi:.2f} {r.theta:.2f} {r.psi:.2f}" for r in ph.particles.table.itertuples()]
    (folder / "particle_locations.txt").write_text("\n".join(lines) + "\n")
    return folder, ph


def _expected_face_colors(names) -> np.ndarray:
    return np.array([(*SHREC21_TABLE.by_name(n).color, 1.0) for n in names])


# ------------------------------------------------------------------------------------ MRC
def test_open_mrc_as_memory_mapped_image_in_nm(vm, tomogram):
    layers = vm.open(str(tomogram), plugin="napari-shrec")
    assert len(layers) == 1
    layer = layers[0]
    assert layer._type_string == "image"
    assert layer.name == "tomo_01"
    np.testing.assert_allclose(layer.scale, [VOXEL_NM] * 3)
    assert [str(u) for u in layer.units] == ["nanometer"] * 3
    assert isinstance(layer.data, np.memmap)  # not read into memory
    lo, hi = layer.contrast_limits
    assert lo < 0 < hi
    assert layer.metadata["source"] == str(tomogram)


def test_mrc_reader_claims_only_mrc_suffixes(tmp_path, tomogram):
    assert _reader.get_mrc_reader(str(tomogram)) is not None
    assert _reader.get_mrc_reader([str(tomogram), str(tomogram)]) is not None
    assert _reader.get_mrc_reader(str(tmp_path / "x.tif")) is None
    assert _reader.get_mrc_reader(str(tmp_path)) is None


def test_broken_mrc_raises_an_error_naming_the_file(tmp_path):
    bad = tmp_path / "broken.mrc"
    bad.write_bytes(b"not an mrc file at all" * 3)
    reader = _reader.get_mrc_reader(str(bad))
    assert reader is not None
    with pytest.raises((MrcReadError, ValueError), match="broken.mrc"):
        reader(str(bad))


# ------------------------------------------------------------------------------------ particles
@pytest.mark.parametrize("suffix", [".txt", ".star", ".csv"])
def test_open_particle_list_as_points_coloured_by_class(vm, tmp_path, suffix):
    pl = _particle_list()
    path = tmp_path / f"picks{suffix}"
    particles_io.write_particles(path, pl)
    layers = vm.open(str(path), plugin="napari-shrec")
    assert len(layers) == 1
    layer = layers[0]
    assert layer._type_string == "points" and layer.name == "picks"
    np.testing.assert_allclose(layer.data, pl.coords_zyx())
    assert [str(u) for u in layer.units] == ["nanometer"] * 3
    expected_scale = VOXEL_NM if suffix == ".star" else 1.0  # only STAR stores a pixel size
    np.testing.assert_allclose(layer.scale, [expected_scale] * 3)
    assert list(layer.features["class"]) == ["1s3x", "4d8q", "1bxn", "1s3x"]
    assert str(layer.features["class"].dtype) == "category"
    np.testing.assert_allclose(layer.features["theta"], [20.0, 45.0, 0.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(layer.face_color, _expected_face_colors(pl.class_names))
    # a point added later takes its class (and colour) from feature_defaults
    defaults = layer.feature_defaults.iloc[0].to_dict()
    layer.feature_defaults = {**defaults, "class": "4d8q"}
    layer.add(np.array([1.0, 2.0, 3.0]))
    assert layer.features["class"].iloc[-1] == "4d8q"
    assert layer.features["source"].iloc[-1] == "manual"
    np.testing.assert_allclose(layer.face_color[-1], _expected_face_colors(["4d8q"])[0])


def test_particle_reader_declines_other_text_files(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello, this is not a particle list\n")
    align = tmp_path / "alignment_simulated.txt"
    align.write_text("# AlignmentTransX AlignmentTransY TiltAngle\n0.0 0.0 -60.0 0.0 1.0 a.mrc\n")
    table = tmp_path / "table.csv"
    table.write_text("a,b,c\n1,2,3\n")
    for path in (notes, align, table):
        assert _reader.get_particles_reader(str(path)) is None, path
    good = tmp_path / "particle_locations.txt"
    good.write_text("1s3x 1 2 3 0 0 0\n")
    assert _reader.get_particles_reader(str(good)) is not None


def test_claimed_particle_file_with_an_error_names_file_and_line(tmp_path):
    bad = tmp_path / "submission.txt"
    bad.write_text("1s3x 1 2 3\n1s3x 1 two 3\n")
    reader = _reader.get_particles_reader(str(bad))
    assert reader is not None
    with pytest.raises(ValueError, match=r"submission\.txt, line 2"):
        reader(str(bad))


# ------------------------------------------------------------------------------------ dataset
def test_open_dataset_folder(vm, shrec20_folder):
    folder, ph = shrec20_folder
    assert _reader.get_dataset_reader(str(folder / "grandmodel.mrc")) is None
    assert _reader.get_dataset_reader(str(folder.parent)) is None
    layers = vm.open(str(folder), plugin="napari-shrec")
    by_name = {layer.name: layer for layer in layers}
    assert list(by_name) == [
        "model_0 reconstruction", "model_0 grandmodel", "model_0 class mask",
        "model_0 occupancy mask", "model_0 ground truth",
    ]
    visible = {name for name, layer in by_name.items() if layer.visible}
    assert visible == {"model_0 reconstruction"}

    recon, grand = by_name["model_0 reconstruction"], by_name["model_0 grandmodel"]
    cmask, occ = by_name["model_0 class mask"], by_name["model_0 occupancy mask"]
    gt = by_name["model_0 ground truth"]
    np.testing.assert_allclose(recon.translate, [0, 0, 0])
    for layer in (grand, cmask, occ, gt):  # grandmodel frame → reconstruction frame
        np.testing.assert_allclose(layer.translate, [16.0, 0, 0])
        assert layer.metadata["grandmodel_z_offset"] == 16
    assert cmask._type_string == "labels" and occ._type_string == "labels"
    assert gt._type_string == "points"

    # class mask: released numbering mapped to our ids, drawn in the class colours
    zyx = np.rint(ph.particles.coords_zyx()).astype(int)
    ours = [SHREC21_TABLE.id_of(n) for n in ph.particles.class_names]
    np.testing.assert_array_equal(np.asarray(cmask.data)[tuple(zyx.T)], ours)
    for class_id in set(ours):
        np.testing.assert_allclose(cmask.colormap.map(np.array([class_id]))[0],
                                   (*SHREC21_TABLE.by_id(class_id).color, 1.0), atol=1e-6)
    assert cmask.colormap.map(np.array([0]))[0][3] == 0  # background transparent
    # occupancy mask: particle ids, converted from float32
    assert occ.data.dtype.kind == "u"
    np.testing.assert_array_equal(np.asarray(occ.data)[tuple(zyx.T)],
                                  np.arange(1, len(ph.particles) + 1))
    # ground truth points: grandmodel-frame voxels, class colours
    np.testing.assert_allclose(gt.data, ph.particles.coords_zyx())
    np.testing.assert_allclose(gt.face_color, _expected_face_colors(ph.particles.class_names))
    assert set(gt.features["source"]) == {"ground truth"}
    # world coordinates of a particle land on the reconstruction voxel z + 16
    world = gt.data_to_world(gt.data[0])
    np.testing.assert_allclose(recon.world_to_data(world), gt.data[0] + [16, 0, 0])


# ------------------------------------------------------------------------------------ writers
@pytest.mark.parametrize("suffix", [".txt", ".star", ".csv"])
def test_points_writers_round_trip(vm, tmp_path, suffix):
    pl = _particle_list()
    src = tmp_path / f"in{suffix}"
    particles_io.write_particles(src, pl)
    layer = vm.open(str(src), plugin="napari-shrec")[0]
    out = tmp_path / f"out{suffix}"
    out.write_text("old content\n")  # napari has asked the user: the writer replaces it
    written = layer.save(str(out), plugin="napari-shrec")
    assert written == [str(out)]
    back = particles_io.read_particles(out)
    np.testing.assert_allclose(back.coords_xyz(), pl.coords_xyz())
    assert list(back.class_names) == list(pl.class_names)
    np.testing.assert_allclose(back.angles_zxz_deg(), pl.angles_zxz_deg(), atol=1e-6)
    if suffix == ".csv":
        assert list(back.table["source"]) == ["manual"] * 4


def test_image_and_labels_writers_round_trip(vm, tmp_path, tomogram):
    image = vm.open(str(tomogram), plugin="napari-shrec")[0]
    out = tmp_path / "copy.mrc"
    assert image.save(str(out), plugin="napari-shrec") == [str(out)]
    vol = read_mrc(out)
    np.testing.assert_array_equal(vol.data, read_mrc(tomogram).data)
    np.testing.assert_allclose(vol.voxel_size_nm, [VOXEL_NM] * 3, rtol=1e-6)

    labels_data = np.zeros((4, 8, 8), dtype=np.int64)
    labels_data[1, 2, 3] = 7
    labels = vm.add_labels(labels_data, scale=(2.0, 2.0, 2.0), units=("nm", "nm", "nm"))
    out_l = tmp_path / "mask.mrc"
    assert labels.save(str(out_l), plugin="napari-shrec") == [str(out_l)]
    back = read_mrc(out_l)
    assert back.data.dtype == np.int16 and back.data[1, 2, 3] == 7
    np.testing.assert_allclose(back.voxel_size_nm, [2.0, 2.0, 2.0])

    angstrom = vm.add_image(np.ones((2, 3, 4), np.float32), scale=(5.0, 5.0, 5.0),
                            units=("angstrom",) * 3)
    out_a = tmp_path / "angstrom.mrc"
    angstrom.save(str(out_a), plugin="napari-shrec")
    np.testing.assert_allclose(read_mrc(out_a).voxel_size_nm, [0.5, 0.5, 0.5])


# ------------------------------------------------------------------------------------ real viewer
_REAL_VIEWER_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import napari
    from napari_shrec.core.classes import SHREC21_TABLE

    tomogram, picks, folder = sys.argv[1:4]
    viewer = napari.Viewer(show=False)
    try:
        (image,) = viewer.open(tomogram, plugin="napari-shrec")
        assert image._type_string == "image" and np.allclose(image.scale, 0.8), image.scale
        assert [str(u) for u in image.units] == ["nanometer"] * 3
        (points,) = viewer.open(picks, plugin="napari-shrec")
        names = list(points.features["class"])
        expected = np.array([(*SHREC21_TABLE.by_name(n).color, 1.0) for n in names])
        assert np.allclose(points.face_color, expected)
        layers = viewer.open(folder, plugin="napari-shrec")
        assert [layer.visible for layer in layers] == [True, False, False, False, False]
        assert layers[2].colormap.map(np.array([1]))[0][3] == 1.0
        viewer.dims.ndisplay = 3  # the GL canvas draws labels and points in 3D
        viewer.dims.ndisplay = 2
        print("REAL-VIEWER-OK", len(viewer.layers))
    finally:
        viewer.close()
    """
)


def test_open_in_a_real_viewer_on_xvfb(tmp_path, tomogram, shrec20_folder):
    display = os.environ.get("DISPLAY")
    if not display:
        pytest.skip("no X display (pytest-xvfb not active)")
    picks = tmp_path / "picks.star"
    particles_io.write_particles(picks, _particle_list())
    script = tmp_path / "real_viewer.py"
    script.write_text(_REAL_VIEWER_SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display}
    proc = subprocess.run(
        [sys.executable, str(script), str(tomogram), str(picks), str(shrec20_folder[0])],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0 and "REAL-VIEWER-OK 7" in proc.stdout, (
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    )
