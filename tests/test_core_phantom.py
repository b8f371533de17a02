import numpy as np

from napari_shrec.core.classes import SHREC20_TABLE
from napari_shrec.core.phantom import sphere_phantom


def test_phantom_masks_agree_with_the_particle_list():
    ph = sphere_phantom((24, 64, 64), 12, seed=4)
    assert len(ph.particles) == 12 and ph.n_requested == 12
    for row_id, row in enumerate(ph.particles.table.itertuples(), start=1):
        z, y, x = int(row.z), int(row.y), int(row.x)
        assert ph.occupancy_mask[z, y, x] == row_id
        assert ph.class_mask[z, y, x] == SHREC20_TABLE.id_of(row.class_name)
        # the ball's volume is close to the class's volume (1 nm voxels)
        n_voxels = int((ph.occupancy_mask == row_id).sum())
        radius = SHREC20_TABLE.by_name(row.class_name).equivalent_radius_nm
        assert abs(n_voxels - 4 / 3 * np.pi * radius**3) < 0.35 * n_voxels
    assert set(np.unique(ph.occupancy_mask)) == set(range(13))  # no overlap lost a particle
    np.testing.assert_array_equal(ph.density > 0, ph.occupancy_mask > 0)


def test_phantom_is_reproducible_and_reports_what_did_not_fit():
    a = sphere_phantom((16, 32, 32), 6, seed=9)
    b = sphere_phantom((16, 32, 32), 6, seed=9)
    assert a.particles == b.particles
    np.testing.assert_array_equal(a.occupancy_mask, b.occupancy_mask)
    crowded = sphere_phantom((12, 20, 20), 40, seed=1, max_tries=20)
    assert crowded.n_requested == 40 and 0 < len(crowded.particles) < 40
