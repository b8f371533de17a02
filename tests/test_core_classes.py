import math

import pytest

from napari_shrec.core.classes import (
    SHREC20_RELEASED_MASK_IDS,
    SHREC20_TABLE,
    SHREC21_RELEASED_MASK_IDS,
    SHREC21_TABLE,
    UnknownClassError,
)


def test_shrec20_table_matches_paper_table1():
    assert len(SHREC20_TABLE) == 12
    assert SHREC20_TABLE.names == ("1s3x", "3qm1", "3gl1", "3h84", "2cg9", "3d2f", "1u6g",
                                   "3cf3", "1bxn", "1qvr", "4cr2", "4d8q")
    assert SHREC20_TABLE.ids == tuple(range(1, 13))
    proteasome = SHREC20_TABLE.by_name("4cr2")
    assert (proteasome.weight_kda, proteasome.volume_nm3, proteasome.area_nm2) == (1309.28, 3085.0,
                                                                                   1971.0)
    assert proteasome.size_group == "large"
    assert sum(c.test_count for c in SHREC20_TABLE) == 2782  # model_9, paper Table 2


def test_sphericity_and_effective_radius_follow_from_volume_and_area():
    # spec §1: Ψ = π^(1/3)(6V)^(2/3)/A and r_eff = 3V/A, to the table's rounding
    for cls in SHREC20_TABLE:
        psi = math.pi ** (1 / 3) * (6 * cls.volume_nm3) ** (2 / 3) / cls.area_nm2
        assert psi == pytest.approx(cls.sphericity, abs=0.006), cls.name
        assert 3 * cls.volume_nm3 / cls.area_nm2 == pytest.approx(cls.effective_radius_nm,
                                                                  abs=0.01), cls.name


def test_size_groups_by_weight():
    assert [c.name for c in SHREC20_TABLE.in_size_group("small")] == [
        "1s3x", "3qm1", "3gl1", "3h84", "2cg9"]
    assert [c.name for c in SHREC20_TABLE.in_size_group("large")] == ["4cr2", "4d8q"]
    assert len(SHREC20_TABLE.in_size_group("medium")) == 5


def test_lookups_are_case_insensitive_and_errors_list_known_names():
    assert SHREC20_TABLE.by_name(" 1S3X ").id == 1
    assert SHREC20_TABLE.canonical_name("4D8Q") == "4d8q"
    assert "1BXN" in SHREC20_TABLE and 12 in SHREC20_TABLE and 13 not in SHREC20_TABLE
    with pytest.raises(UnknownClassError, match="ribosome.*known classes: 1s3x"):
        SHREC20_TABLE.by_name("ribosome")
    with pytest.raises(UnknownClassError, match="unknown class id 99"):
        SHREC20_TABLE.by_id(99)


def test_colours_are_fixed_distinct_and_background_transparent():
    colors = SHREC21_TABLE.colors_by_id()
    assert colors[0] == (0.0, 0.0, 0.0, 0.0)
    rgb = [c[:3] for k, c in colors.items() if k]
    assert len(set(rgb)) == len(rgb) == 16
    assert SHREC20_TABLE.by_name("1s3x").color_hex == "#e6194b"
    assert SHREC21_TABLE.colors_by_name()["1s3x"] == colors[1]


def test_released_mask_numberings_are_permutations_by_name():
    assert sorted(SHREC20_RELEASED_MASK_IDS.values()) == sorted(SHREC20_TABLE.names)
    assert SHREC20_RELEASED_MASK_IDS[1] == "3cf3" and SHREC20_RELEASED_MASK_IDS[12] == "1bxn"
    # SHREC'21 has 15 classes: SHREC'20's without 4d8q, plus 4v94, 5mrc, vesicle, fiducial
    assert set(SHREC21_RELEASED_MASK_IDS.values()) == set(SHREC21_TABLE.names) - {"4d8q"}
    with pytest.raises(TypeError):
        SHREC20_RELEASED_MASK_IDS[1] = "1s3x"  # read-only


def test_shrec21_extras_and_scored_flags():
    assert not SHREC21_TABLE.by_name("4V94").scored
    assert not SHREC21_TABLE.by_name("vesicle").scored
    assert SHREC21_TABLE.by_name("fiducial").scored
    assert SHREC21_TABLE.by_name("5MRC").id == 14


def test_by_weight_orders_like_the_paper():
    assert [c.name for c in SHREC20_TABLE.by_weight()] == list(SHREC20_TABLE.names)


def test_extended_with_adds_new_classes_after_the_last_id():
    table = SHREC20_TABLE.extended_with(["1S3X", "Ribosome", "ribosome", "foo"])
    assert table.by_name("ribosome").id == 13 and table.by_name("foo").id == 14
    assert table.by_name("ribosome").color != table.by_name("foo").color
    assert SHREC20_TABLE.extended_with(["1s3x"]) is SHREC20_TABLE


def test_equivalent_radius():
    cls = SHREC20_TABLE.by_name("1s3x")
    assert cls.equivalent_radius_nm == pytest.approx((3 * 104.1 / (4 * math.pi)) ** (1 / 3))
