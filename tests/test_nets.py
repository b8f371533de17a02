"""The 3D U-Net, its checkpoints, the detection Predictor and the input normalisation."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_shrec.core.nets.checkpoint import (  # noqa: E402
    CheckpointError,
    UNetPredictor,
    load_checkpoint,
    save_checkpoint,
)
from napari_shrec.core.nets.normalize import (  # noqa: E402
    DEFAULT_NORMALIZATION,
    NormalizationStats,
    apply_normalization,
    check_normalization,
    normalization_stats,
    normalize_volume,
)
from napari_shrec.core.nets.unet import UNet3D, UNet3DConfig, count_parameters  # noqa: E402

CLASSES = ("1bxn", "3cf3", "4cr2")


# --------------------------------------------------------------------------- architecture
@pytest.mark.parametrize("depth,width,stride,denoise,norm,upsample", [
    (d, w, s, dn, n, u)
    for (d, w), s, dn, (n, u) in itertools.product(
        [(1, 4), (2, 4), (3, 8)], [1, 2], [False, True],
        [("instance", "transposed"), ("batch", "trilinear"), ("group", "transposed")])
])
def test_output_shapes_for_every_configuration(depth, width, stride, denoise, norm, upsample):
    config = UNet3DConfig(n_classes=4, width=width, depth=depth, norm=norm, denoise_head=denoise,
                          output_stride=stride, upsample=upsample, dropout=0.1)
    torch.manual_seed(0)
    model = UNet3D(config)
    shape = (16, 24, 8 * 2) if depth == 3 else (8, 12, 16) if depth == 2 else (6, 4, 10)
    x = torch.randn(2, 1, *shape)
    out = model(x)
    expected = tuple(s // stride for s in shape)
    assert out["logits"].shape == (2, 4, *expected)
    assert config.output_shape(shape) == expected
    if denoise:
        assert out["denoised"].shape == (2, 1, *shape)
    else:
        assert "denoised" not in out
    assert torch.isfinite(out["logits"]).all()
    assert config.channels == tuple(width * 2 ** i for i in range(depth + 1))


def test_inputs_must_be_multiples_of_two_to_the_depth():
    config = UNet3DConfig(width=4, depth=3)
    model = UNet3D(config)
    with pytest.raises(ValueError, match=r"not a multiple of 2\*\*depth = 8.*\(24, 24, 16\)"):
        model(torch.zeros(1, 1, 20, 24, 12))
    with pytest.raises(ValueError, match="expects a"):
        model(torch.zeros(1, 20, 24, 12))
    with pytest.raises(ValueError, match="not a multiple"):
        config.check_input_shape((4, 8, 8))  # smaller than 2**depth


def test_config_validation_and_dict_round_trip():
    config = UNet3DConfig(n_classes=5, width=8, depth=2, norm="group", denoise_head=True,
                          output_stride=2, dropout=0.2, upsample="trilinear")
    assert UNet3DConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown UNet3DConfig field"):
        UNet3DConfig.from_dict({**config.to_dict(), "kernel": 5})
    for bad in ({"norm": "layer"}, {"output_stride": 4}, {"depth": 0}, {"n_classes": 1},
                {"dropout": 1.0}, {"upsample": "nearest"}, {"width": 2.5}):
        with pytest.raises(ValueError):
            UNet3DConfig(**bad)


def test_default_model_size():
    """Default: width 16, depth 3, 13 classes — 1.40 M parameters, 5.6 MB in float32."""
    model = UNet3D(UNet3DConfig())
    n = count_parameters(model)
    assert n == 1_401_469
    assert n * 4 / 1e6 < 6.0
    # the denoising decoder adds a second decoder (~0.55 M)
    n_denoise = count_parameters(UNet3D(UNet3DConfig(denoise_head=True)))
    assert 1.8e6 < n_denoise < 2.1e6


def test_default_model_forward_on_the_cpu():
    torch.manual_seed(0)
    model = UNet3D(UNet3DConfig()).eval()
    with torch.no_grad():
        logits = model(torch.randn(1, 1, 32, 32, 32))["logits"]
    assert logits.shape == (1, 13, 32, 32, 32) and logits.dtype == torch.float32
    probs = torch.softmax(logits, dim=1)
    assert torch.allclose(probs.sum(1), torch.ones(1, 32, 32, 32), atol=1e-5)


# --------------------------------------------------------------------------- checkpoints
def _small_model(seed=0, **kw):
    torch.manual_seed(seed)
    config = UNet3DConfig(n_classes=len(CLASSES) + 1, width=4, depth=2, **kw)
    model = UNet3D(config).eval()
    return model, config


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    model, config = _small_model(denoise_head=True, norm="batch")
    # give BatchNorm non-trivial running statistics
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 1, 16, 16, 16) * 3 + 1)
    model.eval()
    path = tmp_path / "model.pt"
    history = [{"epoch": 1, "loss": 0.5, "val_loc_F1": np.float64(0.7)}]
    save_checkpoint(path, model, config, class_names=CLASSES, normalization=DEFAULT_NORMALIZATION,
                    provenance={"seed": 3, "data": [Path("/x/model_0")]}, epoch=1,
                    history=history, optimizer_state={"note": np.arange(3)})
    loaded = load_checkpoint(path)
    assert loaded.config == config and loaded.class_names == CLASSES
    assert loaded.normalization == check_normalization(DEFAULT_NORMALIZATION)
    assert loaded.epoch == 1 and loaded.history == [{"epoch": 1, "loss": 0.5, "val_loc_F1": 0.7}]
    assert loaded.optimizer_state == {"note": [0, 1, 2]}
    assert loaded.provenance["seed"] == 3 and loaded.provenance["data"] == ["/x/model_0"]
    assert {"napari_shrec_version", "torch_version", "created"} <= set(loaded.provenance)
    assert not loaded.model.training and loaded.path == path
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        a, b = model(x), loaded.model(x)
    assert torch.equal(a["logits"], b["logits"]) and torch.equal(a["denoised"], b["denoised"])


def test_checkpoint_refuses_to_overwrite_and_checks_class_names(tmp_path):
    model, config = _small_model()
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, config, class_names=CLASSES, normalization=DEFAULT_NORMALIZATION)
    with pytest.raises(FileExistsError, match="m.pt"):
        save_checkpoint(path, model, config, class_names=CLASSES,
                        normalization=DEFAULT_NORMALIZATION)
    save_checkpoint(path, model, config, class_names=CLASSES, normalization=DEFAULT_NORMALIZATION,
                    overwrite=True)
    with pytest.raises(ValueError, match="n_classes is 4 but 2 class names"):
        save_checkpoint(tmp_path / "n.pt", model, config, class_names=CLASSES[:2],
                        normalization=DEFAULT_NORMALIZATION)
    assert not (tmp_path / "n.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no temporary files left


def test_float16_checkpoint_is_half_the_size_and_loads_as_float32(tmp_path):
    model, config = _small_model(seed=1)
    full, half = tmp_path / "full.pt", tmp_path / "half.pt"
    for path, dtype in ((full, "float32"), (half, "float16")):
        save_checkpoint(path, model, config, class_names=CLASSES,
                        normalization=DEFAULT_NORMALIZATION, weights_dtype=dtype)
    assert half.stat().st_size < 0.7 * full.stat().st_size
    loaded = load_checkpoint(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters())
    x = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(loaded.model(x)["logits"].numpy(),
                                   model(x)["logits"].numpy(), atol=2e-2)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("content", ["text", "pickle", "torch_dict", "truncated"])
def test_loading_a_file_that_is_not_a_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / f"not_a_model_{content}.pt"
    if content == "text":
        path.write_text("hello\n")
    elif content == "pickle":
        path.write_bytes(pickle.dumps({"format": "napari-shrec.unet3d"}))
    elif content == "torch_dict":
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        model, config = _small_model()
        good = tmp_path / "good.pt"
        save_checkpoint(good, model, config, class_names=CLASSES,
                        normalization=DEFAULT_NORMALIZATION)
        path.write_bytes(good.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=f"not_a_model_{content}.pt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# --------------------------------------------------------------------------- predictor
def test_predictor_outputs_probabilities_in_the_agreed_layout(tmp_path):
    for stride in (1, 2):
        model, config = _small_model(output_stride=stride)
        path = tmp_path / f"s{stride}.pt"
        save_checkpoint(path, model, config, class_names=CLASSES,
                        normalization=DEFAULT_NORMALIZATION)
        predictor = load_checkpoint(path).predictor(patch_size=(16, 16, 16))
        assert predictor.patch_size == (16, 16, 16) and predictor.output_stride == stride
        assert predictor.class_names == CLASSES
        patch = np.random.default_rng(0).normal(5.0, 2.0, (16, 16, 16)).astype(np.float32)
        probs = predictor(patch)
        assert probs.dtype == np.float32
        assert probs.shape == (4, 16 // stride, 16 // stride, 16 // stride)
        np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
        assert predictor(np.stack([patch, patch])).shape == (2, *probs.shape)
        # a patch of awkward size is padded, the output cropped to ceil(size / stride)
        odd = predictor(patch[:13, :10, :16])
        assert odd.shape == (4, -(-13 // stride), -(-10 // stride), 16 // stride)
    with pytest.raises(ValueError, match="not a multiple"):
        load_checkpoint(path).predictor(patch_size=(18, 16, 16))


def test_predictor_normalises_with_the_tomogram_statistics(tmp_path):
    model, config = _small_model(norm="batch")  # batch norm: the input scale matters
    save_checkpoint(tmp_path / "m.pt", model, config, class_names=CLASSES,
                    normalization=DEFAULT_NORMALIZATION)
    loaded = load_checkpoint(tmp_path / "m.pt")
    rng = np.random.default_rng(1)
    tomogram = rng.normal(100.0, 7.0, (32, 32, 32)).astype(np.float32)
    tomogram[:8] += 50.0  # a patch unlike the rest
    patch = tomogram[:16, :16, :16]
    prepared = loaded.predictor(patch_size=(16, 16, 16))
    stats = prepared.prepare(tomogram)
    assert stats == normalization_stats(tomogram, DEFAULT_NORMALIZATION)
    raw = loaded.predictor(patch_size=(16, 16, 16))
    raw.normalize = False
    normalised = normalize_volume(tomogram)[:16, :16, :16]
    np.testing.assert_array_equal(prepared(patch), raw(normalised))
    per_patch = loaded.predictor(patch_size=(16, 16, 16))  # not prepared: the patch's own stats
    np.testing.assert_array_equal(per_patch(patch), raw(normalize_volume(patch)))
    assert not np.allclose(per_patch(patch), prepared(patch))
    assert isinstance(prepared, UNetPredictor) and "UNetPredictor" in repr(prepared)


# --------------------------------------------------------------------------- normalisation
def test_robust_normalisation_ignores_outliers_and_padding():
    rng = np.random.default_rng(2)
    volume = rng.normal(3.0, 0.5, (40, 64, 64)).astype(np.float32)
    volume[::7, ::5, ::3] = 1e4  # bright outliers (< 1 % of voxels)
    volume[:10] = 0.0  # padding above the sample
    volume[30:] = 0.0
    stats = normalization_stats(volume, slab_z=(10, 30))
    assert stats.centre == pytest.approx(3.0, abs=0.02)
    assert stats.scale == pytest.approx(0.5, rel=0.03)
    out = normalize_volume(volume, slab_z=(10, 30))
    assert out.dtype == np.float32 and out.max() == 10.0  # clipped at ± clip
    assert np.median(out[10:30]) == pytest.approx(0.0, abs=0.03)
    # a part normalised with the whole's statistics equals that part of the normalised whole
    np.testing.assert_array_equal(apply_normalization(volume[12:20, 5:40], stats),
                                  out[12:20, 5:40])
    assert normalization_stats(volume, {"method": "none"}) == NormalizationStats()
    np.testing.assert_array_equal(normalize_volume(volume, {"method": "none"}), volume)
    constant = np.full((8, 8, 8), 2.0, np.float32)
    assert normalization_stats(constant).scale == 1.0


def test_normalisation_method_validation():
    assert check_normalization({"method": "robust"}) == check_normalization(DEFAULT_NORMALIZATION)
    for bad in ({}, {"method": "zscore"}, {"method": "robust", "low_percentile": 60},
                {"method": "robust", "clip": 0}, {"method": "robust", "foo": 1}):
        with pytest.raises(ValueError):
            check_normalization(bad)
