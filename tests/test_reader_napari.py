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


def test_particle_reader_claims_only_star_files_with_pixel_coordinates(tmp_path):
    relion4 = tmp_path / "picks.star"
    particles_io.write_particles(relion4, _particle_list())
    assert _reader.get_particles_reader(str(relion4)) is not None
    # RELION 5 centred coordinates: the tomogram shape is unknown here → left to other readers
    relion5 = tmp_path / "picks_relion5.star"
    particles_io.write_particles(relion5, _particle_list(), relion_version=5,
                                 tomogram_shape_xyz=(32, 24, 12))
    assert "_rlnCenteredCoordinateXAngst" in relion5.read_text()
    assert _reader.get_particles_reader(str(relion5)) is None
    tomograms = tmp_path / "tomograms.star"
    tomograms.write_text(
        "data_global\n\nloop_\n_rlnTomoName #1\n_rlnTomoTiltSeriesPixelSize #2\n"
        "_rlnTomoSizeX #3\n_rlnTomoSizeY #4\n_rlnTomoSizeZ #5\n"
        "TS_01\t1.35\t4000\t4000\t1000\n")
    optics = tmp_path / "optics.star"
    optics.write_text("data_optics\n\nloop_\n_rlnOpticsGroup #1\n_rlnImagePixelSize #2\n"
                      "1\t10.0\n")
    empty_star = tmp_path / "empty.star"
    empty_star.write_text("")
    for path in (tomograms, optics, empty_star):
        assert _reader.get_particles_reader(str(path)) is None, path
    assert _reader.get_particles_reader([str(relion4), str(relion5)]) is None


def test_particle_reader_sniffs_numbers_like_the_shrec_parser(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    comments = tmp_path / "comments.txt"
    comments.write_text("# class x y z\n\n")
    assert _reader.get_particles_reader(str(empty)) is None
    assert _reader.get_particles_reader(str(comments)) is None
    for i, line in enumerate(["1s3x 1_000 2 3", "1s3x nan 2 3", "1s3x 1 inf 3",
                              "1s3x 1 2 -Infinity", "1s3x 1 2 three"]):
        path = tmp_path / f"odd_{i}.txt"
        path.write_text(line + "\n")
        assert _reader.get_particles_reader(str(path)) is None, line
    good = tmp_path / "good.txt"
    good.write_text("# a comment\n1s3x 1e1 -2.5 3 0 0 0\n")
    assert _reader.get_particles_reader(str(good)) is not None


def test_reader_suffixes_are_the_io_suffixes_and_the_manifest_patterns():
    import npe2

    from napari_shrec.io.mrc import MRC_SUFFIXES

    assert not hasattr(_reader, "_MRC_READER_SUFFIXES")
    assert not hasattr(_reader, "_PARTICLE_READER_SUFFIXES")
    manifest = npe2.PluginManager.instance().get_manifest("napari-shrec")
    patterns = {r.command.split(".")[-1]: sorted(r.filename_patterns)
                for r in manifest.contributions.readers}
    assert patterns["get_mrc_reader"] == sorted(f"*{s}" for s in MRC_SUFFIXES)
    assert patterns["get_particles_reader"] == sorted(
        f"*{s}" for s in particles_io.PARTICLE_SUFFIXES)


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


def _write_mrc_without_voxel_size(path: Path, data: np.ndarray) -> None:
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
        mrc.voxel_size = 0


def test_dataset_layers_all_take_the_dataset_voxel_size(vm, tmp_path, caplog):
    """A reconstruction header at 0.8 nm and masks whose headers hold no voxel size (as SHREC's
    often do): every layer is scaled by 0.8 nm and the grandmodel frame lies on the
    reconstruction."""
    folder = tmp_path / "model_2"
    folder.mkdir()
    ph = sphere_phantom((20, 64, 64), 8, seed=3)
    write_mrc(folder / "reconstruction.mrc", np.zeros((28, 64, 64), np.float32),
              voxel_size_nm=0.8)
    _write_mrc_without_voxel_size(folder / "occupancy_mask.mrc",
                                  ph.occupancy_mask.astype(np.float32))
    _write_mrc_without_voxel_size(folder / "class_mask.mrc", _released(ph.class_mask))
    _write_mrc_without_voxel_size(folder / "grandmodel.mrc", ph.density)
    lines = [f"{r.class_name} {int(r.x)} {int(r.y)} {int(r.z)} 0 0 0"
             for r in ph.particles.table.itertuples()]
    (folder / "particle_locations.txt").write_text("\n".join(lines) + "\n")
    with caplog.at_level("WARNING", logger="napari_shrec"):
        layers = vm.open(str(folder), plugin="napari-shrec")
    by_name = {layer.name: layer for layer in layers}
    assert set(by_name) == {"model_2 reconstruction", "model_2 grandmodel",
                            "model_2 class mask", "model_2 occupancy mask",
                            "model_2 ground truth"}
    offset_vox = (28 - 20) // 2
    for name, layer in by_name.items():
        np.testing.assert_allclose(layer.scale, [0.8] * 3, err_msg=name)
        expected = [0, 0, 0] if name.endswith("reconstruction") else [offset_vox * 0.8, 0, 0]
        np.testing.assert_allclose(layer.translate, expected, atol=1e-9, err_msg=name)
    occ = by_name["model_2 occupancy mask"]
    assert occ.metadata["voxel_size_nm"] == (0.8, 0.8, 0.8)
    assert "header_voxel_size_nm" not in occ.metadata  # its header has none
    # headers without a voxel size are no disagreement
    assert not [r for r in caplog.records if "differs" in r.getMessage()]
    # a ground-truth particle lands on its occupancy voxel in world coordinates
    gt = by_name["model_2 ground truth"]
    world = gt.data_to_world(gt.data[0])
    zyx = np.rint(occ.world_to_data(world)).astype(int)
    assert np.asarray(occ.data)[tuple(zyx)] == 1
    # a header that gives another voxel size than the one imposed is logged
    from napari_shrec.layers import volume_to_image_layer

    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_shrec"):
        _, kwargs, _ = volume_to_image_layer(read_mrc(folder / "reconstruction.mrc"), "r",
                                             voxel_size_nm=1.0)
    assert kwargs["scale"] == (1.0, 1.0, 1.0)
    assert kwargs["metadata"]["header_voxel_size_nm"] == pytest.approx((0.8, 0.8, 0.8))
    assert any("reconstruction.mrc" in r.getMessage() and "differs" in r.getMessage()
               for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="napari_shrec"):
        volume_to_image_layer(read_mrc(folder / "reconstruction.mrc"), "r",
                              voxel_size_nm=0.8 * (1 + 5e-4))  # within 1e-3: silent
    assert not [r for r in caplog.records if "differs" in r.getMessage()]


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


def _star_pixel_size_A(path: Path) -> float | None:
    import starfile

    optics = starfile.read(path, always_dict=True).get("optics")
    if optics is None or "rlnImagePixelSize" not in optics:
        return None
    return float(np.asarray(optics["rlnImagePixelSize"])[0])


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_star_writer_invents_no_pixel_size_for_an_assumed_voxel_size(vm, tmp_path, suffix):
    src = tmp_path / f"in{suffix}"
    particles_io.write_particles(src, _particle_list())  # txt/csv store no voxel size
    layer = vm.open(str(src), plugin="napari-shrec")[0]
    assert layer.metadata["voxel_size_assumed"] is True
    out = tmp_path / "out.star"
    layer.save(str(out), plugin="napari-shrec")
    assert _star_pixel_size_A(out) is None
    assert "rlnImagePixelSize" not in out.read_text()
    np.testing.assert_allclose(particles_io.read_particles(out).coords_xyz(),
                               _particle_list().coords_xyz())
    # a scale the user set is real data: written
    layer.scale = (0.8, 0.8, 0.8)
    layer.save(str(out), plugin="napari-shrec")
    assert _star_pixel_size_A(out) == pytest.approx(8.0)


def test_star_writer_invents_no_pixel_size_for_a_layer_in_pixels(vm, tmp_path):
    layer = vm.add_points(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), name="clicked")
    assert [str(u) for u in layer.units] == ["pixel"] * 3
    out = tmp_path / "clicked.star"
    layer.save(str(out), plugin="napari-shrec")
    assert _star_pixel_size_A(out) is None
    # a list with a known voxel size keeps it
    star_in = tmp_path / "known.star"
    particles_io.write_particles(star_in, _particle_list())
    known = vm.open(str(star_in), plugin="napari-shrec")[0]
    out_known = tmp_path / "known_out.star"
    known.save(str(out_known), plugin="napari-shrec")
    assert _star_pixel_size_A(out_known) == pytest.approx(VOXEL_NM * 10)


def test_unit_that_is_not_a_length_is_logged(caplog):
    from napari_shrec._writer import _unit_to_nm_factor, voxel_size_nm_from_meta

    assert _unit_to_nm_factor("angstrom") == pytest.approx(0.1)
    with caplog.at_level("WARNING", logger="napari_shrec"):
        assert _unit_to_nm_factor("pixel") == 1.0
        assert not caplog.records
        assert voxel_size_nm_from_meta({"scale": (2.0, 2.0, 2.0),
                                        "units": ("second", "nm", "nm")}) == (2.0, 2.0, 2.0)
    assert any("'second' is not a length" in r.getMessage() for r in caplog.records)


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
