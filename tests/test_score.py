"""The SHREC evaluator (core/score.py): every rule of spec §4 on small volumes, with the expected
numbers derived by hand in the comments."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from napari_shrec.core.classes import SHREC21_TABLE
from napari_shrec.core.particles import ParticleList
from napari_shrec.core.progress import Cancelled, CancelToken
from napari_shrec.core.score import (
    MISSED,
    OUTCOMES,
    UNKNOWN,
    ScoreParams,
    UnknownClassLabelsError,
    default_class_table,
    dilated_values_at,
    score_submission,
)
from napari_shrec.io.mrc import read_mrc, write_mrc

CROSS = ndimage.generate_binary_structure(3, 1)
NAN = float("nan")


def plist(rows, metadata=None) -> ParticleList:
    """rows: (class, x, y, z) tuples."""
    names = [r[0] for r in rows]
    coords = [r[1:4] for r in rows] if rows else np.zeros((0, 3))
    return ParticleList.from_arrays(names, coords, metadata=metadata)


def cube_mask(shape_zyx, cubes):
    """cubes: [(x0, y0, z0, size)], particle id = position in the list + 1."""
    mask = np.zeros(shape_zyx, dtype=np.int16)
    for i, (x, y, z, s) in enumerate(cubes, start=1):
        mask[z:z + s, y:y + s, x:x + s] = i
    return mask


def close(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12)


# --------------------------------------------------------------------------- §4.1 dilation
@pytest.mark.parametrize("seed", range(5))
def test_lookup_equals_grey_dilation_with_cross_footprint(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(3, 9, size=3))
    mask = (rng.integers(0, 6, size=shape) * (rng.random(shape) < 0.3)).astype(np.int32)
    zyx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    got = dilated_values_at(mask, zyx)
    for mode in ("constant", "reflect", "nearest"):  # the organizers' skimage uses "reflect"
        want = ndimage.grey_dilation(mask, footprint=CROSS, mode=mode, cval=0)
        np.testing.assert_array_equal(got, want[tuple(zyx.T)])


def test_lookup_equals_the_organizers_skimage_dilation():
    morphology = pytest.importorskip("skimage.morphology")
    rng = np.random.default_rng(11)
    mask = (rng.integers(0, 9, (7, 8, 9)) * (rng.random((7, 8, 9)) < 0.3)).astype(np.float32)
    zyx = np.stack(np.meshgrid(*[np.arange(s) for s in mask.shape], indexing="ij"),
                   -1).reshape(-1, 3)
    want = morphology.dilation(mask)  # default footprint: the 3D cross
    np.testing.assert_array_equal(dilated_values_at(mask, zyx), want[tuple(zyx.T)])


@pytest.mark.parametrize("seed", range(3))
def test_lookup_with_padding_equals_dilate_then_pad(seed):
    # the SHREC'20 script dilates the 200-slice mask, THEN pads it with empty slices
    rng = np.random.default_rng(100 + seed)
    mask = (rng.integers(0, 4, size=(4, 5, 6)) * (rng.random((4, 5, 6)) < 0.4)).astype(np.float32)
    pad = 3
    padded = np.pad(ndimage.grey_dilation(mask, footprint=CROSS), ((pad, pad), (0, 0), (0, 0)))
    zyx = np.stack(np.meshgrid(*[np.arange(s) for s in padded.shape], indexing="ij"),
                   -1).reshape(-1, 3)
    np.testing.assert_array_equal(dilated_values_at(mask, zyx, z_offset=pad), padded[tuple(zyx.T)])


def test_lookup_outside_the_volume_is_zero():
    mask = np.ones((2, 2, 2), dtype=np.uint8)
    got = dilated_values_at(mask, [[-1, 0, 0], [0, 0, 2], [5, 5, 5], [1, 1, 1], [0, 0, 0]])
    # the dilated mask lives on the mask's grid: outside it is 0, even next to a particle voxel
    np.testing.assert_array_equal(got, [0, 0, 0, 1, 1])
    # with a z offset (SHREC'20 padding) the mask starts at z = 3: z = 2 is padding → 0
    got = dilated_values_at(mask, [[2, 0, 0], [3, 0, 0], [4, 1, 1], [5, 0, 0]], z_offset=3)
    np.testing.assert_array_equal(got, [0, 1, 1, 0])


def test_lookup_on_read_only_memmap(tmp_path):
    rng = np.random.default_rng(7)
    mask = (rng.integers(0, 50, size=(6, 7, 8)) * (rng.random((6, 7, 8)) < 0.2)).astype(np.int16)
    write_mrc(tmp_path / "occ.mrc", mask)
    vol = read_mrc(tmp_path / "occ.mrc")
    assert isinstance(vol.data, np.memmap) and not vol.data.flags.writeable
    zyx = rng.integers(0, 6, size=(40, 3))
    want = ndimage.grey_dilation(mask, footprint=CROSS)[tuple(zyx.T)]
    np.testing.assert_array_equal(dilated_values_at(vol.data, zyx), want)


def test_dilation_grows_particles_by_one_face_voxel_not_diagonally():
    # one voxel particle at (x, y, z) = (3, 3, 3) in an 8³ volume
    mask = cube_mask((8, 8, 8), [(3, 3, 3, 1)])
    gt = plist([("1s3x", 3, 3, 3)])
    pred = plist([("1s3x", 4, 3, 3),   # face neighbour → hit
                  ("1s3x", 4, 4, 3),   # edge (diagonal) neighbour → background
                  ("1s3x", 3, 3, 5)])  # two voxels away → background
    r = score_submission(gt, mask, pred)
    assert r.hit_particle.tolist() == [1, 0, 0]
    assert (r.TP, r.FP, r.FN) == (1, 2, 0)


def test_dilation_tie_break_higher_id_wins_even_on_the_lower_particles_own_border():
    # Along x: particle 1 occupies x = 1..2, particle 2 occupies x = 3..4 (they touch),
    # particle 3 at x = 8 and particle 4 at x = 10 leave one empty voxel (x = 9) between them.
    mask = np.zeros((3, 3, 12), dtype=np.int16)
    mask[1, 1, 1:3] = 1
    mask[1, 1, 3:5] = 2
    mask[1, 1, 8] = 3
    mask[1, 1, 10] = 4
    gt = plist([("1s3x", 1.5, 1, 1), ("1s3x", 3.5, 1, 1), ("1s3x", 8, 1, 1), ("1s3x", 10, 1, 1)])
    # x = 2 is particle 1's own voxel, but its face neighbour x = 3 holds 2: max(1, 2) = 2.
    # x = 1 only touches ids 0 and 1 → 1. x = 9 touches 3 and 4 → 4.
    pred = plist([("1s3x", 2, 1, 1), ("1s3x", 1, 1, 1), ("1s3x", 9, 1, 1)])
    r = score_submission(gt, mask, pred)
    assert r.hit_particle.tolist() == [2, 1, 4]
    assert r.outcome.tolist() == ["TP", "TP", "TP"]
    assert r.missed_ids.tolist() == [3]


# ------------------------------------------------------------------- §4.3 rounding, clipping
def test_rounding_is_half_to_even():
    # particle 1 is the single voxel x = 4 (y = z = 1); dilated it covers x = 3..5.
    mask = cube_mask((3, 3, 10), [(4, 1, 1, 1)])
    gt = plist([("1s3x", 4, 1, 1)])
    xs = [2.5,   # → 2 (half to even; half-up would give 3 = hit) → background
          3.5,   # → 4 → hit
          5.5,   # → 6 (even) → background
          2.51,  # → 3 → hit (duplicate)
          6.5]   # → 6 → background
    pred = plist([("1s3x", x, 1, 1) for x in xs])
    r = score_submission(gt, mask, pred)
    assert r.lookup_xyz[:, 0].tolist() == [2, 4, 6, 3, 6]
    assert r.hit_particle.tolist() == [0, 1, 0, 1, 0]
    assert r.outcome.tolist() == ["FP", "TP", "FP", "duplicate", "FP"]
    assert (r.RR, r.TP, r.FP, r.MH, r.RO) == (5, 1, 3, 1, 0)


def test_clipping_counts_ro_once_per_line_and_still_looks_up():
    # volume (z, y, x) = (5, 6, 7); particle 1 = the corner voxel (0, 0, 0), centre (0, 0, 0)
    mask = cube_mask((5, 6, 7), [(0, 0, 0, 1)])
    gt = plist([("1s3x", 0, 0, 0), ("3qm1", 4, 4, 3)])
    mask[3, 4, 4] = 2
    pred = plist([
        ("1s3x", -3, 0, 0),        # x clipped to 0 → hits particle 1; RO
        ("3qm1", 100, 100, 100),   # clipped to (6, 5, 4): background; RO once (3 coords clipped)
        ("3qm1", -0.5, 0, 0),      # rounds to -0.0 = 0: not clipped; duplicate on particle 1
        ("3qm1", 4, 4, 3),         # inside, hits particle 2
        ("3qm1", 6.4, 5.4, 4.4),   # rounds to (6, 5, 4), the last voxel: not clipped
    ])
    r = score_submission(gt, mask, pred)
    assert r.clipped.tolist() == [True, True, False, False, False]
    assert r.RO == 2
    assert r.lookup_xyz.tolist() == [[0, 0, 0], [6, 5, 4], [0, 0, 0], [4, 4, 3], [6, 5, 4]]
    assert r.hit_particle.tolist() == [1, 0, 1, 2, 0]
    # AD uses the clipped position: first hits (0,0,0)→(0,0,0) = 0 and (4,4,3)→(4,4,3) = 0
    assert r.AD == 0.0
    assert (r.TP, r.FP, r.FN, r.MH) == (2, 2, 0, 1)


# --------------------------------------------------------------------------- §4.4 metrics
def _three_particle_case():
    # 2×2×2 cubes at x = 1, 6, 11 (y = z = 3) in a (8, 8, 16) volume; centres x + 0.5.
    mask = cube_mask((8, 8, 16), [(1, 3, 3, 2), (6, 3, 3, 2), (11, 3, 3, 2)])
    gt = plist([("1s3x", 1.5, 3.5, 3.5), ("3qm1", 6.5, 3.5, 3.5), ("4d8q", 11.5, 3.5, 3.5)])
    return mask, gt


def test_multiple_hits_count_particles_and_precision_counts_duplicates():
    mask, gt = _three_particle_case()
    pred = plist([
        ("1s3x", 1, 3, 3),    # particle 1, first hit
        ("1s3x", 2, 4, 4),    # particle 1 again
        ("1s3x", 2, 3, 4),    # particle 1 a third time
        ("3qm1", 6, 3, 3),    # particle 2, first hit
        ("3qm1", 7, 4, 4),    # particle 2 again
        ("4d8q", 15, 7, 7),   # background
    ])
    r = score_submission(gt, mask, pred)
    # MH = particles with > 1 hit = 2 (not the 3 extra hits); particle 3 missed
    assert (r.RR, r.TP, r.FP, r.FN, r.MH, r.RO) == (6, 2, 1, 1, 2, 0)
    assert r.n_duplicates == 3
    assert r.RR == r.TP + r.FP + r.n_duplicates  # RR = TP + FP + Σ(hits − 1)
    assert r.recall == pytest.approx(2 / 3)
    assert r.precision == pytest.approx(2 / 6)       # TP / RR, duplicates lower precision
    assert r.miss_rate == pytest.approx(1 / 3)
    assert r.F1 == pytest.approx(2 * (2 / 3) * (1 / 3) / (2 / 3 + 1 / 3))  # = 4/9
    assert r.F1 == pytest.approx(4 / 9)
    assert r.outcome.tolist() == ["TP", "duplicate", "duplicate", "TP", "duplicate", "FP"]
    assert r.missed_indices.tolist() == [2] and r.missed_ids.tolist() == [3]


def test_average_distance_uses_the_first_hit_only():
    mask, gt = _three_particle_case()
    pred = plist([
        ("1s3x", 1, 3, 3),   # first hit on 1: |(1,3,3) − (1.5,3.5,3.5)| = √0.75
        ("1s3x", 2, 4, 4),   # later hit on 1 (distance √0.75 too, ignored)
        ("3qm1", 8, 3, 3),   # first hit on 2 via dilation (x = 8 next to x = 7):
        #                      |(8,3,3) − (6.5,3.5,3.5)| = √(1.5² + 0.5² + 0.5²) = √2.75
        ("3qm1", 6, 4, 4),   # later, closer hit on 2 (√0.75) — ignored: FIRST hit counts
    ])
    r = score_submission(gt, mask, pred)
    assert r.hit_particle.tolist() == [1, 1, 2, 2]
    assert r.AD == pytest.approx((math.sqrt(0.75) + math.sqrt(2.75)) / 2)
    assert r.distance[3] == pytest.approx(math.sqrt(0.75))


def test_precision_with_duplicates_example():
    # RR = 5: TP = 2, FP = 1, two duplicates; N_gt = 3 → P = 2/5, R = 2/3, F1 = 0.5
    mask, gt = _three_particle_case()
    pred = plist([("1s3x", 1, 3, 3), ("1s3x", 1, 3, 3), ("3qm1", 6, 3, 3), ("3qm1", 6, 3, 3),
                  ("4d8q", 0, 0, 0)])
    r = score_submission(gt, mask, pred)
    assert (r.precision, r.recall) == (pytest.approx(0.4), pytest.approx(2 / 3))
    assert r.F1 == pytest.approx(0.5)


# --------------------------------------------------------------------------- classification
def test_confusion_matrix_and_per_class_f1_by_hand():
    # particles: a1, a2 (1s3x), b (3qm1), c (4d8q); 2×2×2 cubes at x = 1, 6, 11, 16
    mask = cube_mask((8, 8, 22), [(1, 3, 3, 2), (6, 3, 3, 2), (11, 3, 3, 2), (16, 3, 3, 2)])
    gt = plist([("1s3x", 1.5, 3.5, 3.5), ("1s3x", 6.5, 3.5, 3.5), ("3qm1", 11.5, 3.5, 3.5),
                ("4d8q", 16.5, 3.5, 3.5)])
    pred = plist([
        ("1s3x", 1, 3, 3),    # a1 → 1s3x (correct)
        ("3qm1", 6, 3, 3),    # a2 → 3qm1 (misclassified)
        ("1s3x", 6, 4, 4),    # a2 again (duplicate; the first hit decides)
        ("4d8q", 16, 3, 3),   # c → 4d8q (correct); b is missed
        ("1s3x", 0, 7, 7),    # background: does not enter the confusion matrix
    ])
    r = score_submission(gt, mask, pred)
    cm = r.confusion
    assert list(cm.columns)[-1] == MISSED and list(cm.index)[:2] == ["1s3x", "3qm1"]
    assert cm.loc["1s3x", "1s3x"] == 1 and cm.loc["1s3x", "3qm1"] == 1
    assert cm.loc["3qm1", MISSED] == 1 and cm.loc["4d8q", "4d8q"] == 1
    assert int(cm.to_numpy().sum()) == 4  # one entry per GT particle
    # 1s3x: TP 1, FN 1, FP 0 → 2/3; 3qm1: TP 0, FN 1 (missed), FP 1 (a2) → 0; 4d8q: 1
    assert r.per_class_F1["1s3x"] == pytest.approx(2 / 3)
    assert r.per_class_F1["3qm1"] == 0.0
    assert r.per_class_F1["4d8q"] == 1.0
    assert math.isnan(r.per_class_F1["3gl1"])  # absent from both sides
    assert r.per_class.loc["3qm1", ["TP", "FP", "FN"]].tolist() == [0, 1, 1]
    assert r.mean_class_F1 == pytest.approx((2 / 3 + 0 + 1) / 3)
    # script: F1 Macro over the classes present + the "missed" pseudo-class (F1 0); pycm 4.6
    # on actual [1, 1, 2, 3] / predicted [1, 2, 0, 3] prints 0.41667 = this
    assert r.F1_macro_with_background == pytest.approx((2 / 3 + 0 + 1 + 0) / 4)
    assert r.size_group_F1["small"] == pytest.approx((2 / 3 + 0) / 2)
    assert math.isnan(r.size_group_F1["medium"])
    assert r.size_group_F1["large"] == 1.0
    assert r.outcome.tolist() == ["TP", "misclassified", "duplicate", "TP", "FP"]
    # per-class localization: lines labelled c against particles of class c
    # 1s3x: 3 lines (on a1; on a2 — a duplicate globally, but the only 1s3x-labelled line on
    # a2; background) → particles {a1, a2} of 2 → R 1, P 2/3 → F1 0.8
    assert r.per_class_localization_F1["1s3x"] == pytest.approx(0.8)
    # 3qm1: 1 line, on a2 (class 1s3x) → TP 0 → 0; 4d8q: 1 line on c → 1
    assert r.per_class_localization_F1["3qm1"] == 0.0
    assert r.per_class_localization_F1["4d8q"] == 1.0


def test_headline_mean_excludes_missed_pseudo_class_and_table_is_weight_ordered():
    mask, gt = _three_particle_case()
    pred = plist([("4d8q", 11, 3, 3), ("1s3x", 1, 3, 3), ("3qm1", 6, 3, 3)])
    r = score_submission(gt, mask, pred)
    weights = r.per_class["weight_kda"].tolist()
    assert weights == sorted(weights)
    assert r.mean_class_F1 == 1.0 and r.F1_macro_with_background == 1.0  # nothing missed


# --------------------------------------------------------------------------- edge cases
def test_empty_submission_gives_numbers_not_a_crash():
    mask, gt = _three_particle_case()
    r = score_submission(gt, mask, plist([]))
    assert (r.RR, r.TP, r.FP, r.FN, r.MH, r.RO) == (0, 0, 0, 3, 0, 0)
    assert (r.recall, r.precision, r.F1, r.miss_rate) == (0.0, 0.0, 0.0, 1.0)
    assert math.isnan(r.AD)
    assert r.mean_class_F1 == 0.0 and r.F1_macro_with_background == 0.0
    assert r.confusion[MISSED].sum() == 3
    json.dumps(r.to_dict(), allow_nan=False)


def test_tp_zero_only_false_positives():
    mask, gt = _three_particle_case()
    r = score_submission(gt, mask, plist([("1s3x", 0, 0, 0), ("1s3x", 15, 7, 7)]))
    assert (r.TP, r.FP, r.FN, r.F1) == (2 - 2, 2, 3, 0.0)
    assert math.isnan(r.AD) and r.to_dict()["AD"] is None


def test_nothing_missed_has_no_pseudo_class_in_the_macro():
    mask, gt = _three_particle_case()
    pred = plist([("1s3x", 1, 3, 3), ("1s3x", 6, 3, 3), ("4d8q", 11, 3, 3)])
    r = score_submission(gt, mask, pred)
    assert r.FN == 0 and r.confusion[MISSED].sum() == 0
    # 1s3x: TP 1, FP 1 → 2/3; 3qm1: FN 1 → 0; 4d8q: 1. No "missed" entries → /3, not /4
    # (pycm's F1 Macro without class 0 gives the same 0.5556; the script then crashes in
    # relabel() because its mapping names a class "0" that is absent)
    assert r.F1_macro_with_background == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert r.mean_class_F1 == pytest.approx((2 / 3 + 0 + 1) / 3)


def test_class_absent_from_both_sides_is_null_and_left_out_of_means():
    mask, gt = _three_particle_case()
    r = score_submission(gt, mask, plist([("1s3x", 1, 3, 3)]))
    d = r.to_dict()
    assert d["per_class_F1"]["1bxn"] is None
    assert d["size_group_F1"]["medium"] is None
    assert r.mean_class_F1 == pytest.approx((1 + 0 + 0) / 3)


def test_empty_ground_truth_and_empty_submission():
    r = score_submission(plist([]), np.zeros((4, 4, 4), np.int16), plist([]))
    assert (r.RR, r.TP, r.FP, r.FN, r.N_gt) == (0, 0, 0, 0, 0)
    assert r.F1 == 0.0 and math.isnan(r.mean_class_F1)
    assert json.loads(json.dumps(r.to_dict(), allow_nan=False))["mean_class_F1"] is None


def test_mask_id_beyond_the_particle_list_is_a_clear_error():
    mask = cube_mask((4, 4, 4), [(0, 0, 0, 1), (2, 2, 2, 1)])
    with pytest.raises(ValueError, match="not a particle id"):
        score_submission(plist([("1s3x", 0, 0, 0)]), mask, plist([("1s3x", 2, 2, 2)]))


def test_nan_coordinate_is_a_clear_error():
    mask, gt = _three_particle_case()
    with pytest.raises(ValueError, match="NaN coordinate on line"):
        score_submission(gt, mask, plist([("1s3x", float("nan"), 1, 1)]))


# --------------------------------------------------------------------------- unknown labels
def test_unknown_labels_error_lists_labels_and_line_numbers():
    mask, gt = _three_particle_case()
    pred = plist([("1s3x", 1, 3, 3), ("ribosome", 6, 3, 3), ("xyz", 0, 0, 0),
                  ("ribosome", 0, 1, 1)],
                 metadata={"source": "sub.txt", "line_numbers": [2, 5, 9, 12]})
    with pytest.raises(UnknownClassLabelsError) as info:
        score_submission(gt, mask, pred)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.labels == {"ribosome": [5, 12], "xyz": [9]}
    text = str(err)
    assert text.startswith("sub.txt: 2 unknown class labels")
    assert "'ribosome' (lines 5, 12)" in text and "'xyz' (line 9)" in text
    assert "--unknown-as-misclassified" in text


def test_unknown_labels_without_line_numbers_use_row_numbers():
    mask, gt = _three_particle_case()
    with pytest.raises(UnknownClassLabelsError, match=r"'zzz' \(row 2\)"):
        score_submission(gt, mask, plist([("1s3x", 1, 3, 3), ("zzz", 0, 0, 0)]))


def test_unknown_labels_counted_as_misclassified_on_request():
    mask, gt = _three_particle_case()
    pred = plist([("ribosome", 1, 3, 3), ("ribosome", 0, 0, 0), ("3qm1", 6, 3, 3)])
    r = score_submission(gt, mask, pred, ScoreParams(count_unknown_as_misclassified=True))
    assert r.outcome.tolist() == ["misclassified", "FP", "TP"]
    assert list(r.confusion.columns)[-2:] == [MISSED, UNKNOWN]
    assert r.confusion.loc["1s3x", UNKNOWN] == 1
    # 1s3x: FN 1 → 0; 3qm1: 1; 4d8q missed → 0; macro: (0+1+0 + missed 0 + unknown 0) / 5
    assert r.per_class_F1["1s3x"] == 0.0
    assert r.F1_macro_with_background == pytest.approx(1 / 5)
    assert r.predicted_class[0] == "ribosome"


def test_unknown_ground_truth_label_is_an_error():
    mask, _ = _three_particle_case()
    gt = plist([("1s3x", 1, 3, 3), ("foo", 6, 3, 3), ("4d8q", 11, 3, 3)])
    with pytest.raises(UnknownClassLabelsError, match="'foo'"):
        score_submission(gt, mask, plist([]), ScoreParams(count_unknown_as_misclassified=True))


def test_labels_are_case_insensitive():
    mask, gt = _three_particle_case()
    r = score_submission(gt, mask, plist([("1S3X", 1, 3, 3), (" 3qm1", 6, 3, 3)]))
    assert r.outcome.tolist() == ["TP", "TP"]


# --------------------------------------------------------------------------- §4.2 SHREC'20 frame
def _shrec20_case():
    # 200-slice grandmodel mask (z, y, x) = (200, 6, 6); particle 1 = cube 2³ at z 10..11,
    # particle 2 = cube 2³ at z 197..198 plus its last slice z = 199 (touches the bottom).
    mask = np.zeros((200, 6, 6), dtype=np.float32)  # released masks are float32
    mask[10:12, 2:4, 2:4] = 1
    mask[197:200, 2:4, 2:4] = 2
    gt = plist([("1s3x", 2.5, 2.5, 10.5), ("4d8q", 2.5, 2.5, 198)])
    return mask, gt


def test_shrec2020_pads_and_offsets_ground_truth_z():
    mask, gt = _shrec20_case()
    # in the 512 frame: particle 1 at z 166..167, particle 2 at z 353..355
    pred = plist([("1s3x", 2, 2, 166), ("4d8q", 3, 3, 355)])
    r = score_submission(gt, mask, pred, ScoreParams(mode="shrec2020"))
    assert r.z_shift == 0 and r.hit_particle.tolist() == [1, 2]
    assert r.AD == pytest.approx((math.sqrt(0.25 + 0.25 + 0.25) + math.sqrt(0.25 + 0.25 + 1)) / 2)


def test_shrec2020_padding_is_empty_even_next_to_a_particle():
    mask, gt = _shrec20_case()
    # z = 356 is the first padding slice below particle 2's voxel at 355 (grandmodel 199): the
    # organizers pad AFTER dilating, so it is background. 356 does not trigger the shift (> 356).
    r = score_submission(gt, mask, plist([("4d8q", 2, 2, 356), ("1s3x", 2, 2, 166)]),
                         ScoreParams(mode="shrec2020"))
    assert r.z_shift == 0 and r.hit_particle.tolist() == [0, 1]
    # z = 155 above the grandmodel — only reachable with the heuristic off
    r = score_submission(gt, mask, plist([("1s3x", 2, 2, 155)]),
                         ScoreParams(mode="shrec2020", auto_z_shift=False))
    assert r.hit_particle.tolist() == [0] and r.z_shift == 0


@pytest.mark.parametrize(
    ("zs", "shift"),
    [
        ([166, 356], 0),      # all in 156…356 → no shift
        ([166, 356.4], 0),    # 356.4 rounds to 356 → no shift
        ([166, 356.5], 0),    # 356.5 rounds (half to even) to 356 → no shift
        ([166, 356.51], 156),  # → 357 > 356 → shift
        ([155.5, 300], 0),    # 155.5 rounds to 156 (even) → no shift
        ([155.4, 300], 156),  # → 155 < 156 → shift
        ([10, 198], 156),     # the grandmodel frame → shift
    ],
)
def test_shrec2020_auto_z_shift_threshold(zs, shift):
    mask, gt = _shrec20_case()
    pred = plist([("1s3x", 2, 2, z) for z in zs])
    r = score_submission(gt, mask, pred, ScoreParams(mode="shrec2020"))
    assert r.z_shift == shift
    assert bool(r.warnings) == bool(shift)


def test_shrec2020_shift_moves_every_z():
    mask, gt = _shrec20_case()
    # grandmodel-frame submission: z 10 and 198 → +156 → 166 and 354: both hit
    r = score_submission(gt, mask, plist([("1s3x", 2, 2, 10), ("4d8q", 2, 2, 198)]),
                         ScoreParams(mode="shrec2020"))
    assert r.z_shift == 156 and r.hit_particle.tolist() == [1, 2] and r.RO == 0
    # a 512-frame submission with ONE stray z = 400 shifts EVERY z: 166 → 322 (miss),
    # 400 → 556 → clipped to 511 (RO)
    r = score_submission(gt, mask, plist([("1s3x", 2, 2, 166), ("1s3x", 2, 2, 400)]),
                         ScoreParams(mode="shrec2020"))
    assert r.z_shift == 156 and r.hit_particle.tolist() == [0, 0]
    assert r.lookup_xyz[:, 2].tolist() == [322, 511] and r.RO == 1


def test_shrec2020_clips_into_the_512_frame():
    mask, gt = _shrec20_case()
    pred = plist([("1s3x", 2, 2, 166), ("1s3x", 2, 2, 356), ("4d8q", -4, 9, 300)])
    r = score_submission(gt, mask, pred, ScoreParams(mode="shrec2020"))
    assert r.z_shift == 0
    assert r.lookup_xyz[2].tolist() == [0, 5, 300]  # x, y clipped into the 6-voxel mask
    assert r.clipped.tolist() == [False, False, True] and r.RO == 1


# --------------------------------------------------------------------------- SHREC'21
def _shrec21_case():
    # particles (ids 1…5): 1s3x, 4v94, vesicle, 4d8q, fiducial; 2×2×2 cubes 5 voxels apart
    cubes = [(1 + 5 * i, 3, 3, 2) for i in range(5)]
    mask = cube_mask((8, 8, 26), cubes)
    gt = plist([(name, 1.5 + 5 * i, 3.5, 3.5)
                for i, name in enumerate(["1s3x", "4v94", "vesicle", "4d8q", "fiducial"])])
    return mask, gt


def test_shrec2021_exclusions_and_the_ngt_quirk():
    mask, gt = _shrec21_case()
    pred = plist([
        ("4V94", 6, 3, 3),       # on the 4V94 particle: ignored
        ("vesicle", 11, 3, 3),   # on the vesicle: ignored
        ("4V94", 1, 3, 3),       # first hit on 1s3x, labelled 4V94: TP, classified as missed
        ("1S3X", 2, 3, 3),       # duplicate on 1s3x (the first hit decides the class)
        ("4D8Q", 16, 3, 3),      # 4d8q: TP, upper-case label
        ("fiducial", 21, 3, 3),  # fiducial: a scored class
        ("1S3X", 25, 7, 7),      # background: FP
    ])
    r = score_submission(gt, mask, pred, ScoreParams(mode="shrec2021"))
    assert r.class_table is SHREC21_TABLE
    assert "4v94" not in r.scored_classes and "vesicle" not in r.scored_classes
    assert "fiducial" in r.scored_classes and "5mrc" in r.scored_classes
    # N_gt = 5 − 1 (4V94 removed); the vesicle stays in N_gt though it can never be found
    assert r.N_gt == 4
    assert (r.RR, r.TP, r.FP, r.FN, r.MH, r.RO) == (7, 3, 1, 0, 1, 0)
    assert r.n_ignored == 2 and r.n_duplicates == 1
    assert r.recall == pytest.approx(3 / 4) and r.miss_rate == pytest.approx(1 / 4)
    assert r.precision == pytest.approx(3 / 7)
    assert r.F1 == pytest.approx(6 / 11)  # 2·(3/4)(3/7) / (3/4 + 3/7)
    assert r.outcome.tolist() == ["ignored", "ignored", "misclassified", "duplicate", "TP", "TP",
                                  "FP"]
    assert r.confusion.loc["1s3x", MISSED] == 1
    assert r.excluded_indices.tolist() == [1, 2]
    assert r.per_class_F1["1s3x"] == 0.0
    assert r.per_class_F1["4d8q"] == 1.0 and r.per_class_F1["fiducial"] == 1.0
    assert math.isnan(r.per_class_F1["5mrc"])
    # headline: proteins only (1s3x 0, 4d8q 1); the script's macro also has fiducial + missed
    assert r.mean_class_F1 == pytest.approx(0.5)
    assert r.F1_macro_with_background == pytest.approx((0 + 1 + 1 + 0) / 4)
    assert r.size_group_F1["large"] == 1.0 and r.size_group_F1["small"] == 0.0


def test_native_mode_scores_every_class_of_the_table():
    mask, gt = _shrec21_case()
    pred = plist([("4v94", 6, 3, 3), ("vesicle", 11, 3, 3)])
    r = score_submission(gt, mask, pred)  # native: SHREC21 table (GT has 4v94), all scored
    assert r.class_table is SHREC21_TABLE
    assert r.N_gt == 5 and r.TP == 2 and r.n_ignored == 0


def test_default_class_table():
    assert default_class_table("shrec2021") is SHREC21_TABLE
    assert "fiducial" not in default_class_table("native", ["1s3x", "4D8Q"])
    assert "fiducial" in default_class_table("native", ["1s3x", "FIDUCIAL"])


# --------------------------------------------------------------------------- API details
def test_result_arrays_align_with_predictions_and_outcomes_are_known():
    mask, gt = _three_particle_case()
    pred = plist([("1s3x", 1, 3, 3), ("1s3x", 0, 0, 0)])
    r = score_submission(gt, mask, pred)
    for arr in (r.hit_particle, r.outcome, r.clipped, r.distance, r.predicted_class):
        assert len(arr) == len(pred)
    assert set(r.outcome) <= set(OUTCOMES)
    assert r.outcome_counts() == {"TP": 1, "misclassified": 0, "duplicate": 0, "FP": 1,
                                  "ignored": 0}
    assert math.isnan(r.distance[1])


def test_json_schema_keys():
    mask, gt = _three_particle_case()
    r = score_submission(gt, mask, plist([("1s3x", 1, 3, 3)]), submission_name="umc")
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    for key in ("schema", "submission", "mode", "N_gt", "RR", "TP", "FP", "FN", "MH", "RO", "AD",
                "recall", "precision", "miss_rate", "F1", "per_class_F1", "mean_class_F1",
                "F1_macro_with_background", "size_group_F1", "per_class_localization_F1",
                "confusion", "per_class", "duplicates", "ignored", "z_shift", "warnings"):
        assert key in d, key
    assert d["submission"] == "umc"
    assert list(d["per_class_F1"]) == list(d["confusion"]["rows"])
    assert d["confusion"]["columns"][-1] == "missed"
    assert len(d["confusion"]["matrix"]) == len(d["confusion"]["rows"])
    assert set(d["size_group_F1"]) == {"small", "medium", "large"}
    assert "predictions" in r.to_dict(include_predictions=True)


def test_accepts_a_volume_and_reports_progress_and_cancels(tmp_path):
    mask, gt = _three_particle_case()
    write_mrc(tmp_path / "occ.mrc", mask)
    calls = []
    r = score_submission(gt, read_mrc(tmp_path / "occ.mrc"), plist([("1s3x", 1, 3, 3)]),
                         progress=lambda d, t, m: calls.append((d, t)))
    assert r.TP == 1
    assert calls[0] == (0, 5) and calls[-1] == (5, 5)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        score_submission(gt, mask, plist([]), cancel=token)


def test_params_validate():
    with pytest.raises(ValueError):
        ScoreParams(mode="shrec2019")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ScoreParams(z_offset=-1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScoreParams().mode = "native"  # type: ignore[misc]


def test_matches_a_straightforward_reference_on_random_data():
    # random touching blobs; the reference dilates the whole mask and loops like the scripts
    rng = np.random.default_rng(3)
    shape = (20, 24, 28)
    mask = np.zeros(shape, np.int32)
    names, centres = [], []
    classes = [c.name for c in default_class_table("native")]
    for k in range(1, 41):
        z, y, x = (int(rng.integers(1, s - 3)) for s in shape)
        mask[z:z + 3, y:y + 2, x:x + 3] = k
        names.append(str(rng.choice(classes)))
        centres.append((x + 1, y + 0.5, z + 1))
    present = set(np.unique(mask)) - {0}
    keep = [k for k in range(1, 41) if k in present]
    # renumber so ids match the rows of the kept particles
    lut = np.zeros(41, np.int32)
    lut[keep] = np.arange(1, len(keep) + 1)
    mask = lut[mask]
    gt = plist([(names[k - 1], *centres[k - 1]) for k in keep])
    pred_xyz = rng.uniform(-2, np.array(shape[::-1]) + 1, size=(300, 3))
    pred = plist([(str(rng.choice(classes)), *p) for p in pred_xyz])
    r = score_submission(gt, mask, pred)

    dil = ndimage.grey_dilation(mask, footprint=CROSS)
    found: list[list[tuple[str, float]]] = [[] for _ in range(len(keep) + 1)]
    ro = 0
    for label, x, y, z in zip(pred.class_names, *pred_xyz.T, strict=True):
        c = [round(float(v)) for v in (x, y, z)]  # the scripts' int(round(float(v)))
        cl = np.clip(c, 0, np.array(shape[::-1]) - 1)
        ro += int(list(cl) != c)
        pid = int(dil[cl[2], cl[1], cl[0]])
        gx, gy, gz = (0, 0, 0) if pid == 0 else gt.coords_xyz()[pid - 1]
        found[pid].append((label, float(np.linalg.norm(cl - np.array([gx, gy, gz])))))
    tp = sum(1 for f in found[1:] if f)
    assert (r.TP, r.FP, r.RO) == (tp, len(found[0]), ro)
    assert r.MH == sum(1 for f in found[1:] if len(f) > 1)
    assert r.AD == pytest.approx(np.mean([f[0][1] for f in found[1:] if f]))
    first = [f[0][0] if f else MISSED for f in found[1:]]
    for true, pr in zip(gt.class_names, first, strict=True):
        assert r.confusion.loc[true, pr] >= 1
    assert int(r.confusion.to_numpy().sum()) == len(keep)
