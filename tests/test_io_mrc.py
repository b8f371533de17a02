import os

import mrcfile
import numpy as np
import pytest

from napari_shrec.core.volume import Volume
from napari_shrec.io.mrc import MrcReadError, read_mrc, read_mrc_header, write_mrc


def test_round_trip_keeps_data_voxel_size_and_origin(tmp_path):
    data = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    vol = Volume(data, voxel_size_nm=(1.2, 1.1, 1.0), origin_nm=(3.0, 2.0, 1.0))
    path = write_mrc(tmp_path / "v.mrc", vol)
    back = read_mrc(path)
    assert isinstance(back.data, np.memmap)
    np.testing.assert_array_equal(back.data, data)
    np.testing.assert_allclose(back.voxel_size_nm, (1.2, 1.1, 1.0), rtol=1e-6)
    np.testing.assert_allclose(back.origin_nm, (3.0, 2.0, 1.0), rtol=1e-6)
    # x is the fastest axis in the file: mrcfile sees the same (z, y, x) array and 10x Å sizes
    with mrcfile.open(path) as mrc:
        assert mrc.header.nx == 6 and mrc.header.nz == 4
        assert float(mrc.voxel_size.x) == pytest.approx(10.0)
        assert float(mrc.voxel_size.z) == pytest.approx(12.0)
    in_memory = read_mrc(path, mmap=False)
    assert not isinstance(in_memory.data, np.memmap)
    np.testing.assert_array_equal(in_memory.data, data)


def test_refuses_to_overwrite_and_leaves_file_untouched(tmp_path):
    path = tmp_path / "v.mrc"
    write_mrc(path, np.ones((2, 2, 2), np.float32))
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=str(path)):
        write_mrc(path, np.zeros((2, 2, 2), np.float32))
    assert path.read_bytes() == before
    write_mrc(path, np.zeros((2, 2, 2), np.float32), overwrite=True)
    assert read_mrc(path).data.sum() == 0
    assert [p.name for p in tmp_path.iterdir()] == ["v.mrc"]  # no temporary files left


def test_failed_write_leaves_no_partial_file(tmp_path):
    with pytest.raises(ValueError, match="2D or 3D"):
        write_mrc(tmp_path / "bad.mrc", np.zeros((2, 2, 2, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_dtypes_mrc_cannot_hold_are_converted(tmp_path):
    labels = np.arange(27, dtype=np.int64).reshape(3, 3, 3)
    write_mrc(tmp_path / "l.mrc", labels, voxel_size_nm=2.0)
    back = read_mrc(tmp_path / "l.mrc")
    assert back.data.dtype == np.int16
    np.testing.assert_array_equal(back.data, labels)
    write_mrc(tmp_path / "f.mrc", np.ones((2, 2, 2)))
    assert read_mrc(tmp_path / "f.mrc").data.dtype == np.float32
    write_mrc(tmp_path / "b.mrc", np.ones((2, 2, 2), bool))
    assert read_mrc(tmp_path / "b.mrc").data.dtype == np.int8


def test_2d_image_reads_as_one_slice_and_stack_flag(tmp_path):
    write_mrc(tmp_path / "img.mrc", np.ones((5, 6), np.float32))
    assert read_mrc(tmp_path / "img.mrc").shape == (1, 5, 6)
    write_mrc(tmp_path / "ts.st", np.ones((3, 5, 6), np.float32), image_stack=True)
    header = read_mrc_header(tmp_path / "ts.st")
    assert header["is_image_stack"] and header["shape_zyx"] == (3, 5, 6)


def test_missing_voxel_size_falls_back_to_default(tmp_path):
    path = tmp_path / "novs.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((2, 2, 2), np.float32))
        mrc.voxel_size = 0
    vol = read_mrc(path, default_voxel_size_nm=1.0)
    assert vol.voxel_size_nm == (1.0, 1.0, 1.0)
    assert vol.metadata["voxel_size_from_header"] is False


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mrc"):
        read_mrc(tmp_path / "nope.mrc")
    junk = tmp_path / "junk.mrc"
    junk.write_bytes(b"not an mrc file at all")
    with pytest.raises(MrcReadError, match="junk.mrc"):
        read_mrc(junk)
    with pytest.raises(MrcReadError, match="junk.mrc"):
        read_mrc_header(junk)


def test_memory_map_reads_lazily(tmp_path):
    data = np.zeros((64, 64, 64), np.float32)
    data[10, 20, 30] = 5
    path = write_mrc(tmp_path / "big.mrc", data)
    vol = read_mrc(path)
    assert vol.data[10, 20, 30] == 5
    assert os.path.getsize(path) == 1024 + data.nbytes
    with pytest.raises(ValueError):  # read-only map
        vol.data[0, 0, 0] = 1


def test_tilt_stack_without_z_spacing_keeps_x_and_y(tmp_path):
    path = tmp_path / "ts.st"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((3, 4, 4), np.float32))
        mrc.voxel_size = (13.48, 13.48, 0.0)
    vol = read_mrc(path)
    np.testing.assert_allclose(vol.voxel_size_nm, (1.348, 1.348, 1.348))
    assert vol.metadata["voxel_size_from_header"] is True
    assert read_mrc_header(path)["voxel_size_nm"] == vol.voxel_size_nm


def test_written_files_get_normal_permissions(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = write_mrc(tmp_path / "v.mrc", np.zeros((2, 2, 2), np.float32))
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
        os.chmod(path, 0o664)
        write_mrc(path, np.ones((2, 2, 2), np.float32), overwrite=True)
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o664)  # the file's own mode is kept
    finally:
        os.umask(old_umask)
