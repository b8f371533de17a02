"""Training: data from dataset folders, the patch sampler, wedge-preserving augmentation, the
training loop (loss, determinism, resume, cancel, checkpoints) and validation with the scorer."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_shrec.core.classes import SHREC20_RELEASED_MASK_IDS  # noqa: E402
from napari_shrec.core.nets.checkpoint import load_checkpoint  # noqa: E402
from napari_shrec.core.nets.normalize import apply_normalization  # noqa: E402
from napari_shrec.core.nets.unet import UNet3DConfig  # noqa: E402
from napari_shrec.core.particles import ParticleList  # noqa: E402
from napari_shrec.core.progress import Cancelled, CancelToken  # noqa: E402
from napari_shrec.core.train import (  # noqa: E402
    PatchSampler,
    TrainingData,
    TrainingVolume,
    TrainParams,
    _downsample_labels,
    augment_patch,
    best_checkpoint_path,
    train,
    validate,
)

SIM_CLASSES = ("1bxn", "3cf3", "1qvr", "4cr2")


# --------------------------------------------------------------------------- helpers
def stub_detect(volume, predictor, params=None, *, class_names, slab_z=None, progress=None,
                cancel=None, **_):
    """A minimal stand-in with detection's signature: tiles, argmax, one particle per
    connected component (centroid)."""
    from scipy import ndimage

    pz, py, px = predictor.patch_size
    s = predictor.output_stride
    shape = volume.shape
    padded = np.zeros(tuple(-(-n // p) * p for n, p in zip(shape, (pz, py, px))), np.float32)
    padded[:shape[0], :shape[1], :shape[2]] = volume
    out = np.zeros((len(class_names) + 1, *(n // s for n in padded.shape)), np.float32)
    for z in range(0, padded.shape[0], pz):
        for y in range(0, padded.shape[1], py):
            for x in range(0, padded.shape[2], px):
                out[:, z // s:(z + pz) // s, y // s:(y + py) // s, x // s:(x + px) // s] = \
                    predictor(padded[z:z + pz, y:y + py, x:x + px])
    labels = out.argmax(0)
    names, coords = [], []
    for k, name in enumerate(class_names, start=1):
        components, n = ndimage.label(labels == k)
        for c in ndimage.center_of_mass(labels == k, components, range(1, n + 1)):
            z, y, x = (np.asarray(c) * s + (s - 1) / 2)
            if z < shape[0] and y < shape[1] and x < shape[2]:
                names.append(name)
                coords.append((x, y, z))
    return SimpleNamespace(particles=ParticleList.from_arrays(names, np.reshape(coords, (-1, 3))))


def synthetic_data(counts=(40, 10, 4), shape=(48, 96, 96), seed=0, denoise=False):
    """Bright balls on noise; class i has counts[i] particles."""
    from napari_shrec.core.targets import sphere_targets

    rng = np.random.default_rng(seed)
    names = ["4cr2", "1bxn", "3cf3"][:len(counts)]
    labels_list = [n for n, c in zip(names, counts) for _ in range(c)]
    coords = rng.uniform((2, 2, 2), (shape[2] - 3, shape[1] - 3, shape[0] - 3),
                         size=(len(labels_list), 3))
    particles = ParticleList.from_arrays(labels_list, coords)
    labels = sphere_targets(shape, particles, {n: 3.0 for n in names}, names)
    image = rng.normal(0.0, 1.0, shape).astype(np.float32) + 2.0 * (labels > 0)
    volume = TrainingVolume.from_arrays(image * 5 + 100, particles, names, labels=labels,
                                        denoise_target=(labels > 0).astype(np.float32)
                                        if denoise else None)
    return TrainingData([volume], names)


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory):
    from napari_shrec.core.simulate import run_simulation, simulation_params

    folder = tmp_path_factory.mktemp("train-sim") / "small"
    params = simulation_params("small", seed=21, structure_sources=[], download_structures=False,
                               n_particles=(20, 20), classes=SIM_CLASSES,
                               tilt_angles_deg=tuple(np.arange(-60.0, 61.0, 6.0)))
    run_simulation(params, folder)
    return folder


# --------------------------------------------------------------------------- parameters
def test_train_params_validation_and_round_trip():
    params = TrainParams(patch_size=[32, 32, 48], class_weights=[1, 2, 3], schedule="onecycle")
    assert params.patch_size == (32, 32, 48) and params.class_weights == (1.0, 2.0, 3.0)
    assert TrainParams.from_dict(params.to_dict()) == params
    assert params.total_steps == params.epochs * params.steps_per_epoch
    for bad in ({"schedule": "step"}, {"batch_size": 0}, {"background_fraction": 1.5},
                {"class_weights": "inverse"}, {"patch_size": (32, 32)}, {"learning_rate": 0},
                {"ce_weight": 0, "tversky_weight": 0}, {"grad_clip_norm": -1}):
        with pytest.raises(ValueError):
            TrainParams(**bad)
    with pytest.raises(ValueError, match="unknown TrainParams"):
        TrainParams.from_dict({"lr": 1})


# --------------------------------------------------------------------------- data
def test_training_data_from_a_napari_shrec_simulation(small_sim):
    from napari_shrec.io.dataset import load_dataset

    ds = load_dataset(small_sim)
    data = TrainingData.from_folders(small_sim, denoise=True)
    # default classes: those of the particle list, in class-table order
    assert data.class_names == ("3cf3", "1bxn", "1qvr", "4cr2")
    (v,) = data.volumes
    recon = ds.read_volume("reconstruction").data
    assert v.shape == recon.shape == ds.read_volume("class_mask").data.shape
    np.testing.assert_array_equal(v.image, apply_normalization(recon, v.stats))
    assert v.target_kind == "class_mask"
    class_mask = np.asarray(ds.read_class_mask().data)
    for k, name in enumerate(data.class_names, start=1):
        np.testing.assert_array_equal(v.labels == k,
                                      class_mask == ds.class_table.id_of(name))
    assert data.particle_counts() == {n: 5 for n in data.class_names}
    assert v.denoise_target is not None and v.ground_truth is not None
    assert v.denoise_target.std() == pytest.approx(1.0, rel=0.02)
    # forced balls, and a subset of the classes in another order
    spheres = TrainingData.from_folders(small_sim, class_names=["4cr2", "1bxn"],
                                        target="spheres")
    sv = spheres.volumes[0]
    assert sv.target_kind == "spheres" and set(np.unique(sv.labels)) == {0, 1, 2}
    assert spheres.particle_counts() == {"4cr2": 5, "1bxn": 5}
    description = spheres.describe()[0]
    assert description["folder"] == str(small_sim) and description["target"] == "spheres"


def test_training_data_from_a_shrec2020_folder_crops_the_slab_and_maps_by_name(tmp_path):
    """SHREC'20 layout: masks of nz slices, a reconstruction twice as tall with the slab
    centred, released class-mask numbering."""
    from napari_shrec.io.mrc import write_mrc
    from napari_shrec.io.shrec_txt import write_shrec_txt

    released = {name: mid for mid, name in SHREC20_RELEASED_MASK_IDS.items()}
    nz, n = 8, 16
    names = ["1bxn", "3cf3", "1s3x"]
    centres = [(4, 4, 3), (10, 10, 5), (12, 4, 2)]  # x, y, z in the mask's frame
    class_mask = np.zeros((nz, n, n), np.float32)
    occupancy = np.zeros((nz, n, n), np.float32)
    for row, (name, (x, y, z)) in enumerate(zip(names, centres), start=1):
        class_mask[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = released[name]
        occupancy[z - 1:z + 2, y - 1:y + 2, x - 1:x + 2] = row
    rng = np.random.default_rng(0)
    recon = rng.normal(0, 1, (2 * nz, n, n)).astype(np.float32)
    recon[:4] = 50.0  # the padding: must not reach the training input
    recon[12:] = -50.0
    folder = tmp_path / "model_0"
    folder.mkdir()
    write_mrc(folder / "class_mask.mrc", class_mask, voxel_size_nm=1.0)
    write_mrc(folder / "occupancy_mask.mrc", occupancy, voxel_size_nm=1.0)
    write_mrc(folder / "reconstruction.mrc", recon, voxel_size_nm=1.0)
    write_shrec_txt(folder / "particle_locations.txt",
                    ParticleList.from_arrays(names, centres), flavour="shrec2020")

    data = TrainingData.from_folders(folder, class_names=["3cf3", "1bxn"])
    (v,) = data.volumes
    assert v.source["flavour"] == "shrec2020" and v.source["input_z_range"] == [4, 12]
    np.testing.assert_array_equal(v.image, apply_normalization(recon[4:12], v.stats))
    assert abs(v.stats.centre) < 0.3 and 0.7 < v.stats.scale < 1.3  # no padding in the stats
    assert v.labels[3, 4, 4] == 2 and v.labels[5, 10, 10] == 1  # 1bxn → 2, 3cf3 → 1 by name
    assert v.labels[2, 4, 12] == 0  # 1s3x is not a channel
    assert np.count_nonzero(v.labels == 1) == np.count_nonzero(v.labels == 2) == 27
    np.testing.assert_array_equal(v.centres_zyx, [(3, 4, 4), (5, 10, 10)])
    np.testing.assert_array_equal(v.centre_channels, [2, 1])
    assert v.ground_truth is not None and v.ground_truth.occupancy_mask.shape == (nz, n, n)
    # without a class mask the particle list gives balls in the same frame
    (folder / "class_mask.mrc").unlink()
    balls = TrainingData.from_folders(folder, class_names=["3cf3", "1bxn"]).volumes[0]
    assert balls.target_kind == "spheres" and balls.labels[3, 4, 4] == 2


# --------------------------------------------------------------------------- augmentation
def _wedge(shape, max_tilt_deg=60.0):
    """Missing wedge of a tilt series about y up to ± max_tilt: |k_z| > |k_x| tan(max tilt)."""
    kz = np.abs(np.fft.fftfreq(shape[0]))[:, None, None]
    kx = np.abs(np.fft.fftfreq(shape[2]))[None, None, :]
    return np.broadcast_to(kz > kx * math.tan(math.radians(max_tilt_deg)), shape)


def test_augmentation_keeps_the_missing_wedge():
    shape = (32, 32, 32)
    rng = np.random.default_rng(0)
    wedge = _wedge(shape)
    volume = np.fft.ifftn(np.fft.fftn(rng.normal(size=shape)) * ~wedge).real
    amplitude = np.abs(np.fft.fftn(volume))
    assert amplitude[wedge].max() < 1e-9 * amplitude.max()
    labels = np.arange(volume.size).reshape(shape)
    seen = set()
    for _ in range(64):
        (image, flipped_labels, none), axes = augment_patch([volume, labels, None], rng)
        seen.add(axes)
        assert none is None
        amp = np.abs(np.fft.fftn(image))
        assert amp[wedge].max() < 1e-9 * amp.max(), axes
        if axes:  # labels follow the image
            np.testing.assert_array_equal(flipped_labels, np.flip(labels, axes))
            np.testing.assert_array_equal(image, np.flip(volume, axes))
    assert len(seen) == 8  # every flip combination, 180° about y (flip z and x) included
    # the check is not vacuous: swapping x and z, or 90° about y, moves the wedge
    for moved in (np.swapaxes(volume, 0, 2), np.rot90(volume, 1, axes=(0, 2))):
        amp = np.abs(np.fft.fftn(moved))
        assert amp[wedge].max() > 0.1 * amp.max()


# --------------------------------------------------------------------------- sampler
def test_sampler_is_class_balanced():
    data = synthetic_data(counts=(40, 10, 4))
    n = 3000
    sampler = PatchSampler(data, (16, 16, 16), background_fraction=0.2, class_balance=1.0,
                           augment=False, rng=np.random.default_rng(1))
    counts = {0: 0, 1: 0, 2: 0, 3: 0}
    v = data.volumes[0]
    for _ in range(n):
        patch = sampler.sample()
        counts[patch.channel] += 1
        box = tuple(slice(a, a + 16) for a in patch.start_zyx)
        np.testing.assert_array_equal(patch.labels, v.labels[box])
        if patch.kind == "particle":
            c = np.asarray(patch.centre_zyx)
            assert np.all(c >= patch.start_zyx) and np.all(c < np.add(patch.start_zyx, 16))
    for k, p in ((0, 0.2), (1, 0.8 / 3), (2, 0.8 / 3), (3, 0.8 / 3)):
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[k] - n * p) < 4.5 * sd, (k, counts)
    # class_balance 0: particles drawn uniformly, so classes in proportion 40 : 10 : 4
    uniform = PatchSampler(data, (16, 16, 16), background_fraction=0.0, class_balance=0.0,
                           augment=False, rng=np.random.default_rng(2))
    drawn = np.bincount([uniform.sample().channel for _ in range(n)], minlength=4)
    for k, share in ((1, 40 / 54), (2, 10 / 54), (3, 4 / 54)):
        assert abs(drawn[k] - n * share) < 4.5 * math.sqrt(n * share * (1 - share)), drawn


def test_sampler_pads_volumes_smaller_than_the_patch_and_batches():
    data = synthetic_data(counts=(3,), shape=(12, 20, 24), denoise=True)
    sampler = PatchSampler(data, (16, 32, 32), rng=np.random.default_rng(0), with_denoise=True,
                           intensity_jitter=0.1)
    images, labels, denoise, patches = sampler.batch(5)
    assert images.shape == denoise.shape == (5, 16, 32, 32) and images.dtype == np.float32
    assert labels.shape == (5, 16, 32, 32) and labels.dtype == np.uint8
    for patch in patches:
        assert patch.start_zyx == (0, 0, 0)
    unflipped = [p for p in patches if 0 not in p.flips]
    assert unflipped and all((p.labels[12:] == 0).all() and (p.denoise[12:] == 0).all()
                             for p in unflipped)
    with pytest.raises(ValueError, match="no denoising target"):
        PatchSampler(synthetic_data(counts=(3,)), (16, 16, 16), with_denoise=True)


def test_stride_two_labels_are_a_majority_vote():
    labels = torch.zeros(1, 4, 4, 4, dtype=torch.long)
    labels[0, :2, :2, :2] = 2  # a full block
    labels[0, 2:, :2, :2] = 1
    labels[0, 2, 0, 0] = 0  # 7 of 8 still 1
    labels[0, :2, 2:, 2:] = 0
    labels[0, 0, 2, 2] = 3  # 1 of 8: background wins
    down = _downsample_labels(labels, 2, 4)
    assert down.shape == (1, 2, 2, 2)
    assert down[0, 0, 0, 0] == 2 and down[0, 1, 0, 0] == 1 and down[0, 0, 1, 1] == 0


# --------------------------------------------------------------------------- training loop
TINY = UNet3DConfig(n_classes=4, width=4, depth=2, dropout=0.1, output_stride=2, norm="group")


def _tiny_params(**kw):
    base = dict(patch_size=(16, 16, 16), batch_size=2, epochs=2, steps_per_epoch=3,
                learning_rate=2e-3, seed=4, threads=1)
    return TrainParams(**{**base, **kw})


def _state(path):
    return load_checkpoint(path).model.state_dict()


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    data = synthetic_data(counts=(8, 4, 4), shape=(24, 32, 32))
    params = _tiny_params()
    a = train(data, params, model_config=TINY, out=tmp_path / "a.pt")
    b = train(data, params, model_config=TINY, out=tmp_path / "b.pt")
    assert [h["step_losses"] for h in a.history] == [h["step_losses"] for h in b.history]
    for k, v in _state(a.checkpoint).items():
        assert torch.equal(v, _state(b.checkpoint)[k]), k

    # interrupted after epoch 1 (cancelled), then resumed: same as uninterrupted
    token = CancelToken()
    with pytest.raises(Cancelled):
        train(data, params, model_config=TINY, out=tmp_path / "c.pt", cancel=token,
              on_epoch=lambda record: token.cancel())
    assert load_checkpoint(tmp_path / "c.pt").epoch == 1
    c = train(data, params, out=tmp_path / "c.pt", resume=tmp_path / "c.pt")
    assert [h["epoch"] for h in c.history] == [1, 2]
    assert [h["step_losses"] for h in c.history] == [h["step_losses"] for h in a.history]
    for k, v in _state(a.checkpoint).items():
        assert torch.equal(v, _state(c.checkpoint)[k]), k
    loaded = load_checkpoint(c.checkpoint)
    assert loaded.epoch == 2 and loaded.provenance["training"]["resumed_from"].endswith("c.pt")
    assert loaded.provenance["training"]["seed"] == 4
    assert loaded.provenance["training"]["params"]["patch_size"] == [16, 16, 16]
    assert loaded.provenance["training"]["data"][0]["particles"] == {
        "4cr2": 8, "1bxn": 4, "3cf3": 4}

    # refusals: existing output, a different architecture or classes on resume
    with pytest.raises(FileExistsError, match="a.pt"):
        train(data, params, model_config=TINY, out=tmp_path / "a.pt")
    with pytest.raises(ValueError, match="architecture"):
        train(data, params, model_config=UNet3DConfig(n_classes=4, width=8, depth=2),
              out=tmp_path / "d.pt", resume=a.checkpoint)
    other = synthetic_data(counts=(8, 4), shape=(24, 32, 32))
    with pytest.raises(ValueError, match="classes"):
        train(other, params, out=tmp_path / "e.pt", resume=a.checkpoint)
    with pytest.raises(ValueError, match="output channels"):
        train(other, params, model_config=TINY, out=tmp_path / "f.pt")
    with pytest.raises(ValueError, match="denoising head"):
        train(data, params, model_config=UNet3DConfig(n_classes=4, width=4, depth=2,
                                                      denoise_head=True), out=tmp_path / "g.pt")


def test_training_on_a_small_simulation_lowers_the_loss(small_sim, tmp_path):
    data = TrainingData.from_folders(small_sim, class_names=SIM_CLASSES, denoise=True)
    config = UNet3DConfig(n_classes=5, width=8, depth=3, denoise_head=True)
    params = TrainParams(patch_size=(32, 32, 32), batch_size=4, epochs=3, steps_per_epoch=12,
                         learning_rate=3e-3, seed=0, validate_every=2)
    records, steps = [], []
    result = train(data, params, model_config=config, val_data=data, detect_fn=stub_detect,
                   out=tmp_path / "sim.pt", on_epoch=records.append,
                   progress=lambda done, total, message: steps.append((done, total)))
    losses = [x for h in result.history for x in h["step_losses"]]
    assert len(losses) == 36 and all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-8:]) < 0.85 * np.mean(losses[:4])
    assert result.history[-1]["ce"] < result.history[0]["ce"]
    assert result.history[-1]["denoise"] < result.history[0]["denoise"]
    assert steps[-1] == (36, 36) and len(records) == 3
    # validated every 2nd epoch and after the last, with the scorer
    assert ["val_loc_F1" in r for r in records] == [False, True, True]
    for record in records[1:]:
        assert 0.0 <= record["val_loc_F1"] <= 1.0 and record["patches_per_s"] > 0
        assert set(record["val_per_class_F1"]) <= set(SIM_CLASSES)
    assert result.best_checkpoint == best_checkpoint_path(tmp_path / "sim.pt")
    assert result.best_checkpoint.is_file() and result.best_epoch in (2, 3)  # validated ones
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.class_names == SIM_CLASSES and loaded.config == config
    assert loaded.history[-1]["val_loc_F1"] == records[-1]["val_loc_F1"]
    assert load_checkpoint(result.best_checkpoint).optimizer_state is None
    # the checkpoint's predictor runs on a tomogram patch
    probs = loaded.predictor(patch_size=(32, 32, 32))(data.volumes[0].image[:32, :32, :32])
    assert probs.shape == (5, 32, 32, 32)


def test_validate_scores_perfect_predictions_perfectly(small_sim):
    """With an oracle detector the validation metrics are the scorer's 1.0."""
    data = TrainingData.from_folders(small_sim, class_names=SIM_CLASSES)
    gt = data.volumes[0].ground_truth

    def oracle(volume, predictor, params=None, *, class_names, slab_z=None, progress=None,
               cancel=None, voxel_size_nm=None):
        assert voxel_size_nm == 1.0
        assert volume is data.volumes[0].image and slab_z is None
        return SimpleNamespace(particles=gt.particles)

    predictor = SimpleNamespace(patch_size=(32, 32, 32), output_stride=1, normalize=True)
    metrics = validate(predictor, data, detect_fn=oracle)
    assert metrics["loc_F1"] == 1.0 and metrics["mean_class_F1"] == 1.0
    assert metrics["per_class_F1"] == {n: 1.0 for n in SIM_CLASSES}
    assert metrics["n_predicted"] == len(gt.particles) and predictor.normalize is False


def test_validation_with_the_real_detector_when_it_exists(small_sim, tmp_path):
    detect_module = pytest.importorskip("napari_shrec.core.detect")
    data = TrainingData.from_folders(small_sim, class_names=SIM_CLASSES)
    params = TrainParams(patch_size=(32, 32, 32), batch_size=2, epochs=1, steps_per_epoch=2,
                         seed=0)
    result = train(data, params, model_config=UNet3DConfig(n_classes=5, width=4, depth=3),
                   val_data=data, out=tmp_path / "real.pt")
    assert 0.0 <= result.history[-1]["val_loc_F1"] <= 1.0
    assert hasattr(detect_module, "detect")


def test_checkpoint_paths(tmp_path):
    assert best_checkpoint_path(tmp_path / "m.pt") == tmp_path / "m.best.pt"
    assert best_checkpoint_path(Path("x/model")) == Path("x/model.best.pt")
