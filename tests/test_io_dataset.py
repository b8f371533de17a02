import json
import logging

import numpy as np
import pytest

from napari_shrec.core.classes import (
    SHREC20_RELEASED_MASK_IDS,
    SHREC21_RELEASED_MASK_IDS,
    SHREC21_TABLE,
)
from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.io.dataset import (
    DatasetError,
    find_dataset_folders,
    is_dataset_folder,
    load_dataset,
    read_alignment_file,
    write_dataset,
)
from napari_shrec.io.mrc import write_mrc


@pytest.fixture(scope="module")
def phantom():
    return sphere_phantom((20, 48, 48), 14, seed=3)


def _released(mask_ids: np.ndarray, numbering) -> np.ndarray:
    """Our class ids → a released numbering (by name)."""
    name_to_released = {name: k for k, name in numbering.items()}
    out = np.zeros_like(mask_ids, dtype=np.float32)  # SHREC ships masks as float32
    for cls in SHREC21_TABLE:
        if cls.name in name_to_released:
            out[mask_ids == cls.id] = name_to_released[cls.name]
    return out


def _write_shrec_folder(folder, phantom, numbering, upper=False, recon_slices=None):
    folder.mkdir()
    write_mrc(folder / "class_mask.mrc", _released(phantom.class_mask, numbering), voxel_size_nm=1)
    write_mrc(folder / "occupancy_mask.mrc", phantom.occupancy_mask.astype(np.float32),
              voxel_size_nm=1)
    write_mrc(folder / "grandmodel.mrc", phantom.density, voxel_size_nm=1)
    if recon_slices:
        write_mrc(folder / "reconstruction.mrc", np.zeros((recon_slices, 48, 48), np.float32),
                  voxel_size_nm=1)
    lines = []
    for row in phantom.particles.table.itertuples():
        name = row.class_name.upper() if upper else row.class_name
        lines.append(f"{name} {int(row.x)} {int(row.y)} {int(row.z)} "
                     f"{row.phi:.2f} {row.theta:.2f} {row.psi:.2f}")
    (folder / "particle_locations.txt").write_text("\n".join(lines) + "\n")


def test_write_and_load_our_own_dataset(tmp_path, phantom):
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"class_mask": phantom.class_mask,
                                    "occupancy_mask": phantom.occupancy_mask,
                                    "grandmodel": phantom.density},
                           simulation={"seed": 3, "tilt_angles_deg": [-3.0, 0.0, 3.0]})
    assert is_dataset_folder(folder)
    ds = load_dataset(folder)
    assert ds.flavour == "napari-shrec"
    assert ds.grandmodel_z_offset == 0 and ds.voxel_size_nm == 1.0
    assert ds.particles == phantom.particles
    np.testing.assert_array_equal(ds.read_class_mask().data, phantom.class_mask)
    np.testing.assert_array_equal(ds.read_volume("occupancy_mask").data, phantom.occupancy_mask)
    assert ds.tilt_angles_deg.tolist() == [-3.0, 0.0, 3.0]
    record = json.loads((folder / "simulation.json").read_text())
    assert record["seed"] == 3 and record["class_ids"]["1s3x"] == 1
    with pytest.raises(FileExistsError, match="already exists"):
        write_dataset(folder, particles=phantom.particles, volumes={})


def test_shrec2020_folder_maps_released_numbering_by_name(tmp_path, phantom):
    folder = tmp_path / "model_9"
    _write_shrec_folder(folder, phantom, SHREC20_RELEASED_MASK_IDS, recon_slices=64)
    ds = load_dataset(folder)
    assert ds.flavour == "shrec2020"
    assert ds.grandmodel_z_offset == (64 - 20) // 2
    assert ds.mask_id_to_class_name[1] == "3cf3"
    np.testing.assert_array_equal(ds.read_class_mask().data, phantom.class_mask)
    shifted = ds.particles_in_reconstruction_frame()
    np.testing.assert_array_equal(shifted.coords_xyz()[:, 2],
                                  phantom.particles.coords_xyz()[:, 2] + 22)


def test_shrec2020_default_offset_without_reconstruction(tmp_path, phantom):
    folder = tmp_path / "m"
    _write_shrec_folder(folder, phantom, SHREC20_RELEASED_MASK_IDS)
    assert load_dataset(folder).grandmodel_z_offset == 156


def test_numbering_that_disagrees_with_the_data_follows_the_data(tmp_path, phantom, caplog):
    folder = tmp_path / "odd"
    # a class mask written in OUR numbering, but in a SHREC'20-looking folder
    _write_shrec_folder(folder, phantom, {c.id: c.name for c in SHREC21_TABLE})
    ds = load_dataset(folder)
    with caplog.at_level(logging.WARNING):
        mapping = ds.mask_id_to_class_name
    assert mapping[1] == "1s3x"
    assert "following the data" in caplog.text
    np.testing.assert_array_equal(ds.read_class_mask().data, phantom.class_mask)


def test_shrec2021_folder(tmp_path, phantom):
    folder = tmp_path / "model_0"
    _write_shrec_folder(folder, phantom, SHREC21_RELEASED_MASK_IDS, upper=True)
    (folder / "alignment_simulated.txt").write_text(
        "\n".join(["# header"] * 6 + ["0.0 0.0 -60.0 0.0 1.0 a.mrc", "0.0 0.0 -58.0 0.0 1.0 b.mrc"])
        + "\n")
    ds = load_dataset(folder)
    assert ds.flavour == "shrec2021"
    assert ds.grandmodel_z_offset == 0
    assert set(ds.particles.class_names) <= set(SHREC21_TABLE.names)  # canonical lower case
    np.testing.assert_array_equal(ds.read_class_mask().data, phantom.class_mask)
    assert ds.tilt_angles_deg.tolist() == [-60.0, -58.0]


def test_unknown_classes_extend_the_table(tmp_path, phantom):
    folder = tmp_path / "custom"
    _write_shrec_folder(folder, phantom, SHREC20_RELEASED_MASK_IDS)
    text = (folder / "particle_locations.txt").read_text().splitlines()
    text[0] = "ribosome " + text[0].split(" ", 1)[1]
    (folder / "particle_locations.txt").write_text("\n".join(text) + "\n")
    ds = load_dataset(folder)
    assert ds.class_table.by_name("ribosome").id == 17
    assert ds.particles.class_names[0] == "ribosome"


def test_errors_name_the_folder_or_file(tmp_path, phantom):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert not is_dataset_folder(tmp_path / "empty")
    with pytest.raises(DatasetError, match="empty: not a dataset folder"):
        load_dataset(tmp_path / "empty")
    bad = tmp_path / "bad"
    _write_shrec_folder(bad, phantom, SHREC20_RELEASED_MASK_IDS)
    write_mrc(bad / "occupancy_mask.mrc", np.zeros((5, 48, 48), np.float32), overwrite=True)
    with pytest.raises(DatasetError, match="differ in shape"):
        load_dataset(bad)
    js = tmp_path / "js"
    js.mkdir()
    (js / "simulation.json").write_text('{\n  "seed": 1,\n  oops\n}\n')
    with pytest.raises(DatasetError, match="simulation.json, line 3"):
        load_dataset(js)
    align = tmp_path / "alignment_simulated.txt"
    align.write_text("# h\n0 0 x 0 1\n")
    with pytest.raises(DatasetError, match="line 2"):
        read_alignment_file(align)


def test_find_dataset_folders_orders_models_numerically(tmp_path, phantom):
    for k in (10, 2, 9):
        _write_shrec_folder(tmp_path / f"model_{k}", phantom, SHREC20_RELEASED_MASK_IDS)
    assert [p.name for p in find_dataset_folders(tmp_path)] == ["model_2", "model_9", "model_10"]
    assert find_dataset_folders(tmp_path / "model_2") == [tmp_path / "model_2"]


def test_write_dataset_checks_every_target_before_writing(tmp_path, phantom):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "particle_locations.txt").write_text("keep me\n")
    with pytest.raises(FileExistsError, match="particle_locations.txt"):
        write_dataset(folder, particles=phantom.particles,
                      volumes={"occupancy_mask": phantom.occupancy_mask})
    assert sorted(p.name for p in folder.iterdir()) == ["particle_locations.txt"]
    assert (folder / "particle_locations.txt").read_text() == "keep me\n"


def test_write_dataset_takes_the_voxel_size_of_its_inputs(tmp_path, phantom):
    from napari_shrec.core.volume import Volume

    volume = Volume(phantom.density, voxel_size_nm=0.5)
    unscaled = phantom.particles.copy()
    unscaled.voxel_size_nm = None
    ds = load_dataset(write_dataset(tmp_path / "a", particles=unscaled,
                                    volumes={"grandmodel": volume}))
    assert ds.voxel_size_nm == 0.5
    assert ds.read_volume("grandmodel").voxel_size_nm == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="disagree on the voxel size"):
        write_dataset(tmp_path / "b", particles=phantom.particles,  # particles say 1 nm
                      volumes={"grandmodel": volume})
    assert not (tmp_path / "b").exists()
