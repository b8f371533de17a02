import numpy as np
import pandas as pd
import pytest

from napari_shrec.core.particles import CORE_COLUMNS, ParticleList
from napari_shrec.core.progress import CancelToken, Cancelled, ProgressReporter
from napari_shrec.core.rotations import random_rotations, zxz_to_matrix
from napari_shrec.core.volume import Volume


def make_list() -> ParticleList:
    return ParticleList.from_arrays(
        ["1s3x", "3cf3", "1s3x"],
        [[1.5, 2, 3], [4, 5, 6], [7, 8, 9]],
        [[10, 20, 30], [0, 90, 0], [0, 0, 0]],
        scores=[0.9, 0.5, 0.1],
        extra={"tomo": ["a", "a", "b"]},
        voxel_size_nm=1.0,
    )


def test_columns_order_dtypes_and_accessors():
    p = make_list()
    assert list(p.table.columns) == list(CORE_COLUMNS) + ["tomo"]
    assert p.extra_columns == ["tomo"]
    np.testing.assert_array_equal(p.coords_xyz()[0], [1.5, 2, 3])
    np.testing.assert_array_equal(p.coords_zyx()[0], [3, 2, 1.5])
    assert p.table["x"].dtype == np.float64
    assert p.class_counts().to_dict() == {"1s3x": 2, "3cf3": 1}
    np.testing.assert_allclose(p.rotation_matrices()[1], zxz_to_matrix([0, 90, 0]))


def test_defaults_for_missing_angles_and_score():
    p = ParticleList(pd.DataFrame({"class_name": ["a"], "x": [1], "y": [2], "z": [3]}))
    assert p.angles_zxz_deg().tolist() == [[0, 0, 0]]
    assert np.isnan(p.scores()[0])


def test_missing_or_non_numeric_columns_are_errors():
    with pytest.raises(ValueError, match="missing the required column 'z'"):
        ParticleList(pd.DataFrame({"class_name": ["a"], "x": [1], "y": [2]}))
    with pytest.raises(ValueError, match="column 'x' must be numeric"):
        ParticleList(pd.DataFrame({"class_name": ["a"], "x": ["left"], "y": [2], "z": [3]}))


def test_empty_list():
    p = ParticleList.empty()
    assert len(p) == 0
    assert p.coords_xyz().shape == (0, 3)
    assert p.rotation_matrices().shape == (0, 3, 3)


def test_subset_concat_copy_and_equality():
    p = make_list()
    sub = p.subset(p.class_names == "1s3x")
    assert len(sub) == 2 and sub.table.index.tolist() == [0, 1]
    both = ParticleList.concat([p, sub])
    assert len(both) == 5 and both.voxel_size_nm == 1.0
    assert p.copy() == p
    p.metadata["line_numbers"] = [3, 5, 9]
    assert p.subset([2, 0]).metadata["line_numbers"] == [9, 3]
    assert p.subset(p.class_names == "1s3x").metadata["line_numbers"] == [3, 9]
    q = p.copy()
    q.table.loc[0, "x"] = 99
    assert q != p and p.table.loc[0, "x"] == 1.5


def test_with_rotations_round_trip():
    p = make_list()
    mats = random_rotations(3, np.random.default_rng(0))
    np.testing.assert_allclose(p.with_rotations(mats).rotation_matrices(), mats, atol=1e-9)


def test_volume_holds_scale_and_checks_input():
    v = Volume(np.zeros((2, 3, 4), np.float32), voxel_size_nm=1.5)
    assert v.voxel_size_nm == (1.5, 1.5, 1.5)
    assert v.isotropic_voxel_size_nm == 1.5
    assert v.extent_nm == (3.0, 4.5, 6.0)
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="positive"):
        Volume(np.zeros((2, 2, 2)), voxel_size_nm=0)
    with pytest.raises(ValueError, match="anisotropic"):
        _ = Volume(np.zeros((2, 2, 2)), voxel_size_nm=(2, 1, 1)).isotropic_voxel_size_nm


def test_progress_reporter_reports_and_cancels():
    calls = []
    token = CancelToken()
    reporter = ProgressReporter(3, lambda d, t, m: calls.append((d, t, m)), token)
    reporter.start("go")
    reporter.advance("one")
    token.cancel()
    with pytest.raises(Cancelled):
        reporter.advance("two")
    assert calls == [(0, 3, "go"), (1, 3, "one")]
