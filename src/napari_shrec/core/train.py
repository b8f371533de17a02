"""Train the 3D U-Net particle picker (:mod:`napari_shrec.core.nets.unet`).

Pieces, in the order training uses them:

- :class:`TrainParams`: every training setting (one frozen dataclass).
- :class:`TrainingData`: tomograms with voxel targets, built from dataset folders
  (:meth:`TrainingData.from_folders`) or arrays (:meth:`TrainingVolume.from_arrays`). The input is
  ``reconstruction.mrc`` (any volume name may be asked for) in the **grandmodel frame**: a
  napari-shrec simulation's reconstruction already has the class mask's shape; a SHREC'20
  reconstruction (512 slices) is cropped to the 200-slice sample slab at
  ``grandmodel_z_offset`` (156) so that every voxel lines up with the masks and the particle
  list. Targets (:mod:`napari_shrec.core.targets`) come from the class mask mapped to channels by
  class name, else from the particle list (balls), or rotated class shapes when maps are given.
  The input is normalised per tomogram (:mod:`napari_shrec.core.nets.normalize`, statistics
  from the slab); the denoising target (``grandmodel_noisefree``) is divided by its standard
  deviation.
- :class:`PatchSampler`: patches of ``patch_size``; a fraction ``background_fraction`` anywhere,
  the rest around a particle: a class drawn uniformly (``class_balance`` = 1; 0 draws particles
  uniformly, so abundant classes dominate), a particle of it, and a random offset that keeps its
  centre at least ``patch // 8`` from the patch's faces. Volumes smaller than a patch are
  zero-padded.
- :func:`augment_patch`: flips along z, y and x, each with probability ``flip_probability``.
  With the tilt axis along y and the beam along z, the missing wedge is the set of frequencies
  with ``|k_z| > |k_x| · tan(α_max)`` — unchanged by ``k_x → −k_x``, ``k_y → −k_y`` and
  ``k_z → −k_z``, hence by every flip and by the 180° rotation about y (= flip x and z). Swapping
  x and z or rotating by 90° about y or z would move the wedge, so they are never used. An
  optional intensity jitter scales and shifts the input by up to ± ``intensity_jitter``.
- :func:`train`: AdamW, a cosine (with linear warm-up) or one-cycle schedule per step, loss =
  ``ce_weight`` · weighted cross-entropy + ``tversky_weight`` · (1 − soft Tversky index averaged
  over the foreground classes present in the batch) [+ ``denoise_weight`` · MSE of the denoising
  head]; mixed precision on CUDA only; validation every ``validate_every`` epochs by running
  detection (:func:`napari_shrec.core.detect.detect`) on the validation tomograms and scoring
  with :func:`napari_shrec.core.score.score_submission` in ``native`` mode (localization F1 and
  mean class F1); the last and the best checkpoint (:mod:`napari_shrec.core.nets.checkpoint`);
  resume from a checkpoint (weights, optimiser, schedule, random states, history). On the CPU
  the same seed gives the same losses and weights, and a resumed run continues exactly as an
  uninterrupted one.

With ``output_stride`` 2 the label patch is reduced to the logits' resolution by a majority vote
over each 2 × 2 × 2 block.

torch is imported only inside the functions that train.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .classes import ClassTable, normalize_class_name
from .nets.normalize import (
    DEFAULT_NORMALIZATION,
    NormalizationStats,
    apply_normalization,
    check_normalization,
    normalization_stats,
)
from .particles import ParticleList
from .progress import CancelToken, ProgressCallback
from .targets import (
    DEFAULT_SPHERE_FRACTION,
    channel_of_class,
    shape_targets,
    sphere_targets,
    targets_from_class_mask,
)

__all__ = [
    "SCHEDULES",
    "TARGET_KINDS",
    "TrainParams",
    "TrainingVolume",
    "TrainingData",
    "PatchSampler",
    "augment_patch",
    "WEDGE_PRESERVING_FLIP_AXES",
    "TrainResult",
    "train",
    "validate",
    "best_checkpoint_path",
]

log = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("cosine", "onecycle", "constant")
TARGET_KINDS: tuple[str, ...] = ("auto", "class_mask", "spheres", "shapes")
#: Array axes (z, y, x) that augmentation may flip: all three (see the module docstring).
WEDGE_PRESERVING_FLIP_AXES: tuple[int, ...] = (0, 1, 2)


def _positive_int(value: Any, name: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
    return int(value)


def _fraction(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


@dataclass(frozen=True)
class TrainParams:
    """How to train (defaults: a CPU-friendly run of the default model).

    Speed of the default model on a 2-core CPU (``benchmarks/bench_train.py``): 64³ × 2 about
    1.2–1.7 patches/s (≈ 1.2 s a step), 48³ × 2 about 7 patches/s, 32³ × 4 about 27 patches/s —
    per voxel, 48³ is twice as fast as 64³ there (cache), so prefer 48³ patches on a CPU.

    Attributes:
        patch_size: (z, y, x) input patch, multiples of the model's ``2**depth``.
        batch_size: patches per step.
        epochs: epochs to train (a resumed run continues up to this count).
        steps_per_epoch: optimiser steps per epoch.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        schedule: "cosine" (linear warm-up over ``warmup_fraction`` of the steps, then cosine
            decay to 1 % of the peak), "onecycle" (torch's OneCycleLR) or "constant".
        warmup_fraction: warm-up share of all steps (cosine only).
        background_fraction: share of patches drawn anywhere in a volume.
        class_balance: 1 draws the class of a particle-centred patch uniformly (class-balanced),
            0 draws particles uniformly; in between, a mix.
        ce_weight, tversky_weight, denoise_weight: loss weights (the last only with a
            denoising head). Default: cross-entropy alone. Measured on a small simulation
            (4 classes, image ratio 0.1, 160 steps of 4 × 32³, width 8): plain cross-entropy found
            every particle (recall 1.0, loc F1 0.74), cross-entropy + Dice 0.54 recall, and
            "balanced" weights + Dice none at all — the patches are already class-balanced,
            and weights up to 30 × push every voxel towards a particle class.
        tversky_alpha, tversky_beta: weights of false positives and false negatives in the
            Tversky index (0.5, 0.5: Dice).
        class_weights: cross-entropy weights: "none" (default), "balanced" (∝ frequency^−½ of
            each channel in sampled patches, at most 50× the smallest), or one weight per
            channel.
        augment: flip patches (wedge-preserving flips only, see :func:`augment_patch`).
        flip_probability: probability of each flip.
        intensity_jitter: input scale and shift jitter (± this; 0: none).
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss
            scaling); never on the CPU or MPS.
        grad_clip_norm: clip the gradient norm to this (None: no clipping).
        device: "auto" (CUDA → MPS → CPU), "cpu", "cuda", "cuda:1", "mps".
        seed: seed of the weights' initialisation, the sampler and the augmentations.
        validate_every: validate every this many epochs (and after the last).
        threads: torch CPU threads while training (0: torch's default).
    """

    patch_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    epochs: int = 20
    steps_per_epoch: int = 100
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_fraction: float = 0.05
    background_fraction: float = 0.2
    class_balance: float = 1.0
    ce_weight: float = 1.0
    tversky_weight: float = 0.0
    tversky_alpha: float = 0.5
    tversky_beta: float = 0.5
    denoise_weight: float = 1.0
    class_weights: str | tuple[float, ...] = "none"
    augment: bool = True
    flip_probability: float = 0.5
    intensity_jitter: float = 0.1
    amp: bool = True
    grad_clip_norm: float | None = 1.0
    device: str = "auto"
    seed: int = 0
    validate_every: int = 1
    threads: int = 0

    def __post_init__(self) -> None:
        try:
            patch = tuple(int(s) for s in self.patch_size)
        except (TypeError, ValueError):
            raise ValueError(f"patch_size must be 3 integers, got {self.patch_size!r}") from None
        if len(patch) != 3 or min(patch) < 1:
            raise ValueError(f"patch_size must be 3 positive integers, got {self.patch_size!r}")
        object.__setattr__(self, "patch_size", patch)
        for name in ("batch_size", "epochs", "steps_per_epoch", "validate_every"):
            object.__setattr__(self, name, _positive_int(getattr(self, name), name))
        object.__setattr__(self, "seed", _positive_int(self.seed, "seed", 0))
        object.__setattr__(self, "threads", _positive_int(self.threads, "threads", 0))
        for name in ("learning_rate",):
            if not float(getattr(self, name)) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("weight_decay", "ce_weight", "tversky_weight", "denoise_weight",
                     "tversky_alpha", "tversky_beta", "intensity_jitter"):
            value = float(getattr(self, name))
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be ≥ 0, got {getattr(self, name)!r}")
            object.__setattr__(self, name, value)
        if self.ce_weight == 0 and self.tversky_weight == 0:
            raise ValueError("ce_weight and tversky_weight cannot both be 0")
        for name in ("warmup_fraction", "background_fraction", "class_balance",
                     "flip_probability"):
            object.__setattr__(self, name, _fraction(getattr(self, name), name))
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if isinstance(self.class_weights, str):
            if self.class_weights not in ("balanced", "none"):
                raise ValueError(f"class_weights must be 'balanced', 'none' or a sequence of "
                                 f"weights, got {self.class_weights!r}")
        else:
            weights = tuple(float(w) for w in self.class_weights)
            if not weights or any(not (w >= 0 and math.isfinite(w)) for w in weights):
                raise ValueError(f"class_weights must be non-negative numbers, got "
                                 f"{self.class_weights!r}")
            object.__setattr__(self, "class_weights", weights)
        if self.grad_clip_norm is not None and not float(self.grad_clip_norm) > 0:
            raise ValueError(f"grad_clip_norm must be > 0 or None, got {self.grad_clip_norm!r}")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch_size"] = list(self.patch_size)
        if isinstance(self.class_weights, tuple):
            out["class_weights"] = list(self.class_weights)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainParams:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown TrainParams field(s) {', '.join(sorted(unknown))}")
        values = dict(data)
        if isinstance(values.get("class_weights"), list):
            values["class_weights"] = tuple(values["class_weights"])
        return cls(**values)


# ============================================================================ data

@dataclass
class GroundTruth:
    """What validation scores against: particles and occupancy mask in the volume's frame."""

    particles: ParticleList
    occupancy_mask: np.ndarray
    class_table: ClassTable | None = None


@dataclass
class TrainingVolume:
    """One tomogram ready for training (everything (z, y, x), one frame).

    Attributes:
        name: for messages and provenance (the folder, or a given name).
        image: normalised float32 input.
        labels: uint8 channels (0 background, k = ``class_names[k − 1]`` of the data).
        centres_zyx: (n, 3) int64 centres of the particles that have a channel.
        centre_channels: (n,) their channels.
        denoise_target: float32 noise-free potential divided by its std, or None.
        target_kind: "class_mask", "spheres" or "shapes".
        stats: the input's normalisation statistics.
        ground_truth: for validation (None: cannot validate on this volume).
        source: provenance (folder, volume name, z range, …).
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    centres_zyx: np.ndarray
    centre_channels: np.ndarray
    denoise_target: np.ndarray | None = None
    target_kind: str = "spheres"
    stats: NormalizationStats | None = None
    ground_truth: GroundTruth | None = None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape != self.labels.shape:
            raise ValueError(f"{self.name}: image {self.image.shape} and labels "
                             f"{self.labels.shape} must be (z, y, x) of one shape")
        if self.denoise_target is not None and self.denoise_target.shape != self.image.shape:
            raise ValueError(f"{self.name}: denoising target {self.denoise_target.shape} and "
                             f"image {self.image.shape} differ in shape")
        self.centres_zyx = np.asarray(self.centres_zyx, dtype=np.int64).reshape(-1, 3)
        self.centre_channels = np.asarray(self.centre_channels, dtype=np.int64).reshape(-1)
        if len(self.centres_zyx) != len(self.centre_channels):
            raise ValueError(f"{self.name}: {len(self.centres_zyx)} centres but "
                             f"{len(self.centre_channels)} channels")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    def crop(self, box_zyx: Sequence[tuple[int, int] | None]) -> TrainingVolume:
        """The sub-volume ``box_zyx`` = ((z0, z1), (y0, y1), (x0, x1)), half-open voxel ranges
        (None: the whole axis), e.g. to validate on part of a tomogram.

        Centres outside the box are dropped. The ground truth keeps exactly the particles whose
        occupancy reaches into the box, renumbered 1…n in the cropped occupancy mask, with
        coordinates shifted into the box (a particle cut by the border keeps its centre, which
        may lie outside).
        """
        if len(box_zyx) != 3:
            raise ValueError(f"{self.name}: the crop box needs 3 ranges (z, y, x), got {box_zyx!r}")
        ranges: list[tuple[int, int]] = []
        for axis, (r, n) in enumerate(zip(box_zyx, self.shape)):
            lo, hi = (0, n) if r is None else (int(r[0]), int(r[1]))
            if not 0 <= lo < hi <= n:
                raise ValueError(f"{self.name}: crop range {r!r} of axis {'zyx'[axis]} is not "
                                 f"inside 0…{n}")
            ranges.append((lo, hi))
        sl = tuple(slice(lo, hi) for lo, hi in ranges)
        origin = np.array([lo for lo, _ in ranges], dtype=np.int64)
        stop = np.array([hi for _, hi in ranges], dtype=np.int64)
        inside = np.all((self.centres_zyx >= origin) & (self.centres_zyx < stop), axis=1)
        ground_truth = None
        if self.ground_truth is not None:
            gt = self.ground_truth
            occupancy = np.asarray(gt.occupancy_mask[sl])
            ids = np.unique(occupancy)
            ids = ids[(ids > 0) & (ids <= len(gt.particles))]
            lookup = np.zeros(int(max(occupancy.max(initial=0), len(gt.particles))) + 1,
                              dtype=np.int32)
            lookup[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
            kept = gt.particles.subset(ids - 1)
            table = kept.table.copy()
            table[["x", "y", "z"]] = table[["x", "y", "z"]].to_numpy() - origin[::-1]
            particles = ParticleList(table, voxel_size_nm=kept.voxel_size_nm,
                                     metadata=dict(kept.metadata))
            ground_truth = GroundTruth(particles, lookup[occupancy], gt.class_table)
        source = {**self.source, "crop_zyx": [list(r) for r in ranges]}
        return TrainingVolume(
            f"{self.name}[{','.join(f'{lo}:{hi}' for lo, hi in ranges)}]",
            np.ascontiguousarray(self.image[sl]), np.ascontiguousarray(self.labels[sl]),
            self.centres_zyx[inside] - origin, self.centre_channels[inside],
            None if self.denoise_target is None else np.ascontiguousarray(
                self.denoise_target[sl]),
            self.target_kind, self.stats, ground_truth, source)

    @classmethod
    def from_arrays(cls, image: np.ndarray, particles: ParticleList,
                    class_names: Sequence[str], *, labels: np.ndarray | None = None,
                    radii_vox: dict[str, float] | None = None,
                    sphere_fraction: float = DEFAULT_SPHERE_FRACTION,
                    normalization: dict[str, Any] | None = None,
                    denoise_target: np.ndarray | None = None,
                    occupancy_mask: np.ndarray | None = None,
                    name: str = "volume") -> TrainingVolume:
        """A volume from arrays: ``image`` (raw, normalised here), ``particles`` in its frame,
        ``labels`` (channels) or balls from the particles, optional denoising target (raw) and
        occupancy mask (for validation)."""
        stats = normalization_stats(image, normalization)
        channel_map = channel_of_class(class_names)
        if labels is None:
            labels = sphere_targets(image.shape, particles, radii_vox, channel_map,
                                    fraction=sphere_fraction)
            kind = "spheres"
        else:
            kind = "labels"
        centres, chans = _centres(particles, channel_map, image.shape)
        gt = GroundTruth(particles, occupancy_mask) if occupancy_mask is not None else None
        return cls(name, apply_normalization(image, stats), np.asarray(labels, dtype=np.uint8),
                   centres, chans, _denoise_target(denoise_target), kind, stats, gt,
                   {"name": name, "shape_zyx": list(image.shape)})


def _centres(particles: ParticleList, channel_map: dict[str, int], shape: Sequence[int]
             ) -> tuple[np.ndarray, np.ndarray]:
    """Rounded centres inside the volume of the particles with a channel, and their channels."""
    if not len(particles):
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0, dtype=np.int64)
    zyx = np.rint(particles.coords_zyx()).astype(np.int64)
    chans = np.array([channel_map.get(normalize_class_name(n), 0)
                      for n in particles.class_names], dtype=np.int64)
    keep = (chans > 0) & np.all((zyx >= 0) & (zyx < np.asarray(shape)), axis=1)
    return zyx[keep], chans[keep]


def _denoise_target(volume: np.ndarray | None) -> np.ndarray | None:
    if volume is None:
        return None
    data = np.asarray(volume, dtype=np.float32)
    step = max(1, math.ceil((data.size / 2_000_000) ** (1 / 3)))
    std = float(np.std(data[::step, ::step, ::step], dtype=np.float64))
    return data / np.float32(std if std > 0 else 1.0)


@dataclass
class TrainingData:
    """Training (or validation) tomograms sharing one channel order and normalisation.

    Attributes:
        volumes: the tomograms.
        class_names: channel k ≥ 1 is ``class_names[k − 1]``.
        normalization: the input normalisation method (stored in checkpoints).
    """

    volumes: list[TrainingVolume]
    class_names: tuple[str, ...]
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))

    def __post_init__(self) -> None:
        self.class_names = tuple(normalize_class_name(n) for n in self.class_names)
        if not self.class_names:
            raise ValueError("TrainingData needs at least one class")
        channel_of_class(self.class_names)  # checks uniqueness and count
        self.normalization = check_normalization(self.normalization)
        if not self.volumes:
            raise ValueError("TrainingData needs at least one volume")

    @property
    def n_channels(self) -> int:
        return len(self.class_names) + 1

    @property
    def has_denoise_target(self) -> bool:
        return all(v.denoise_target is not None for v in self.volumes)

    def particle_counts(self) -> dict[str, int]:
        """{class: particles (with a channel, inside the volumes)} over all volumes."""
        counts = np.zeros(self.n_channels, dtype=np.int64)
        for v in self.volumes:
            counts += np.bincount(v.centre_channels, minlength=self.n_channels)
        return {name: int(counts[k]) for k, name in enumerate(self.class_names, start=1)}

    def describe(self) -> list[dict[str, Any]]:
        """Provenance of each volume (for checkpoints)."""
        out = []
        for v in self.volumes:
            counts = np.bincount(v.centre_channels, minlength=self.n_channels)
            out.append({**v.source, "name": v.name, "shape_zyx": list(v.shape),
                        "target": v.target_kind,
                        "particles": {n: int(counts[k])
                                      for k, n in enumerate(self.class_names, start=1)},
                        "normalization_stats": v.stats.to_dict() if v.stats else None,
                        "denoise_target": v.denoise_target is not None})
        return out

    def cropped(self, box_zyx: Sequence[tuple[int, int] | None]) -> TrainingData:
        """Every volume cropped to ``box_zyx`` (:meth:`TrainingVolume.crop`)."""
        return TrainingData([v.crop(box_zyx) for v in self.volumes], self.class_names,
                            dict(self.normalization))

    @classmethod
    def from_folders(
        cls,
        folders: Sequence[str | os.PathLike] | str | os.PathLike,
        *,
        class_names: Sequence[str] | None = None,
        target: str = "auto",
        input_volume: str = "reconstruction",
        radii_vox: dict[str, float] | None = None,
        sphere_fraction: float = DEFAULT_SPHERE_FRACTION,
        structure_maps: dict[str, Any] | None = None,
        shape_threshold_v: float = 0.03,
        normalization: dict[str, Any] | None = None,
        denoise: bool = False,
    ) -> TrainingData:
        """Training data from dataset folders (:func:`napari_shrec.io.dataset.load_dataset`).

        Args:
            folders: one folder or several.
            class_names: the model's classes in channel order (default: every class in the
                folders' particle lists, in class-table order).
            target: "auto" (the class mask where there is one, else balls), "class_mask",
                "spheres", or "shapes" (needs ``structure_maps``).
            input_volume: the input ("reconstruction"; a grandmodel-frame volume such as
                "grandmodel" for experiments).
            radii_vox, sphere_fraction: ball radii ({class: voxels}; default a fraction of the
                equivalent radius, :func:`~napari_shrec.core.targets.default_sphere_radii`).
            structure_maps, shape_threshold_v: for ``target="shapes"``.
            normalization: input normalisation method (default
                :data:`~napari_shrec.core.nets.normalize.DEFAULT_NORMALIZATION`).
            denoise: also load ``grandmodel_noisefree`` as the denoising target.

        Raises:
            FileNotFoundError, DatasetError: a folder or a needed volume is missing (named).
            ValueError: the frames do not line up.
        """
        from ..io.dataset import load_dataset

        if isinstance(folders, (str, os.PathLike)):
            folders = [folders]
        if target not in TARGET_KINDS:
            raise ValueError(f"target must be one of {TARGET_KINDS}, got {target!r}")
        if target == "shapes" and not structure_maps:
            raise ValueError("target='shapes' needs structure_maps")
        method = check_normalization(DEFAULT_NORMALIZATION if normalization is None
                                     else normalization)
        datasets = [load_dataset(f) for f in folders]
        if not datasets:
            raise ValueError("no dataset folders given")
        if class_names is None:
            seen = {normalize_class_name(n) for ds in datasets for n in ds.particles.class_names}
            table = datasets[0].class_table.extended_with(sorted(seen))
            class_names = [c.name for c in table if c.name in seen]
            if not class_names:
                raise ValueError(f"{datasets[0].folder}: no particles, so no classes; give "
                                 "class_names")
        names = tuple(normalize_class_name(n) for n in class_names)
        volumes = [_volume_from_dataset(ds, names, target, input_volume, radii_vox,
                                        sphere_fraction, structure_maps, shape_threshold_v,
                                        method, denoise) for ds in datasets]
        return cls(volumes, names, method)


def _volume_from_dataset(ds, class_names, target, input_volume, radii_vox, sphere_fraction,
                         structure_maps, shape_threshold_v, method, denoise) -> TrainingVolume:
    from ..io.dataset import GRANDMODEL_FRAME_VOLUMES, scoring_ground_truth

    raw = ds.read_volume(input_volume).data
    grand = next((ds.headers[n]["shape_zyx"] for n in GRANDMODEL_FRAME_VOLUMES if ds.has(n)),
                 None)
    particles = ds.particles
    z_range: tuple[int, int]
    if input_volume in GRANDMODEL_FRAME_VOLUMES:
        z_range = (0, raw.shape[0])
    elif grand is not None:
        z0 = int(ds.grandmodel_z_offset)
        if tuple(raw.shape[1:]) != tuple(grand[1:]) or z0 < 0 or z0 + grand[0] > raw.shape[0]:
            raise ValueError(f"{ds.folder}: {input_volume}.mrc {tuple(raw.shape)} does not hold "
                             f"the grandmodel frame {tuple(grand)} at z offset {z0}")
        z_range = (z0, z0 + int(grand[0]))
    else:  # no grandmodel-frame volume: work in the input's frame
        z_range = (0, raw.shape[0])
        particles = ds.particles_in_reconstruction_frame()
    image_raw = np.asarray(raw[z_range[0]:z_range[1]])
    shape = image_raw.shape
    stats = normalization_stats(image_raw, method)
    image = apply_normalization(image_raw, stats)
    del image_raw
    channel_map = channel_of_class(class_names)

    kind = target
    if kind == "auto":
        kind = "class_mask" if ds.has("class_mask") else "spheres"
    if kind == "class_mask":
        mask = ds.read_class_mask().data
        if mask.shape != shape:
            raise ValueError(f"{ds.folder}: class_mask.mrc {mask.shape} and the input {shape} "
                             "differ in shape")
        ids_to_channel = {ds.class_table.id_of(n): channel_map[n] for n in class_names
                          if n in ds.class_table}
        labels = targets_from_class_mask(mask, ids_to_channel)
    elif kind == "spheres":
        labels = sphere_targets(shape, particles, radii_vox, channel_map,
                                voxel_size_nm=ds.voxel_size_nm, fraction=sphere_fraction)
    else:
        labels = shape_targets(shape, particles, structure_maps, shape_threshold_v,
                               channels=channel_map)
    centres, chans = _centres(particles, channel_map, shape)
    denoise_target = None
    if denoise:
        noisefree = ds.read_volume("grandmodel_noisefree").data
        if noisefree.shape != shape:
            raise ValueError(f"{ds.folder}: grandmodel_noisefree.mrc {noisefree.shape} and the "
                             f"input {shape} differ in shape")
        denoise_target = _denoise_target(noisefree)
    ground_truth = None
    if ds.has("occupancy_mask") and particles is ds.particles:
        gt = scoring_ground_truth(ds)
        if tuple(gt.occupancy_mask.shape) == shape:
            ground_truth = GroundTruth(gt.particles, gt.occupancy_mask, gt.class_table)
    source = {"folder": str(ds.folder), "flavour": ds.flavour, "input_volume": input_volume,
              "input_z_range": list(z_range), "voxel_size_nm": ds.voxel_size_nm}
    return TrainingVolume(str(ds.folder), image, labels, centres, chans, denoise_target, kind,
                          stats, ground_truth, source)


# ============================================================================ sampling

def augment_patch(arrays: Sequence[np.ndarray | None], rng: np.random.Generator, *,
                  flip_probability: float = 0.5) -> tuple[list[np.ndarray | None],
                                                          tuple[int, ...]]:
    """Flip every array along the same random subset of the axes z, y, x (each with
    ``flip_probability``); the only augmentations that keep the missing wedge where it is (module
    docstring). Returns the flipped arrays (contiguous copies; None stays None) and the axes
    flipped."""
    axes = tuple(a for a in WEDGE_PRESERVING_FLIP_AXES if rng.random() < flip_probability)
    out: list[np.ndarray | None] = []
    for a in arrays:
        if a is None:
            out.append(None)
        else:
            out.append(np.ascontiguousarray(np.flip(a, axis=axes)) if axes else a.copy())
    return out, axes


@dataclass
class Patch:
    """One training sample: input, labels, denoising target (or None) and where it came from
    (``kind`` "particle" or "background", ``channel`` and ``centre_zyx`` of the chosen particle
    (0 and None for background), ``volume`` index, ``start_zyx`` of the patch in the volume,
    ``flips`` applied)."""

    image: np.ndarray
    labels: np.ndarray
    denoise: np.ndarray | None
    kind: str
    channel: int
    volume: int
    start_zyx: tuple[int, int, int]
    flips: tuple[int, ...] = ()
    centre_zyx: tuple[int, int, int] | None = None


class PatchSampler:
    """Draws training patches (module docstring) from :class:`TrainingData`, reproducibly from
    its ``rng``."""

    def __init__(self, data: TrainingData, patch_size: Sequence[int], *,
                 background_fraction: float = 0.2, class_balance: float = 1.0,
                 augment: bool = True, flip_probability: float = 0.5,
                 intensity_jitter: float = 0.0, rng: np.random.Generator | None = None,
                 with_denoise: bool = False) -> None:
        self.data = data
        self.patch_size = tuple(int(s) for s in patch_size)
        self.background_fraction = float(background_fraction)
        self.class_balance = float(class_balance)
        self.augment = bool(augment)
        self.flip_probability = float(flip_probability)
        self.intensity_jitter = float(intensity_jitter)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.with_denoise = bool(with_denoise)
        if self.with_denoise and not data.has_denoise_target:
            raise ValueError("the training data have no denoising target (load them with "
                             "denoise=True)")
        # every particle as (volume, row), grouped by channel
        vol_idx, rows, chans = [], [], []
        for i, v in enumerate(data.volumes):
            vol_idx.append(np.full(len(v.centre_channels), i))
            rows.append(np.arange(len(v.centre_channels)))
            chans.append(v.centre_channels)
        self._vol = np.concatenate(vol_idx) if vol_idx else np.zeros(0, dtype=np.int64)
        self._row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        chan = np.concatenate(chans) if chans else np.zeros(0, dtype=np.int64)
        self.channels_present = tuple(int(c) for c in np.unique(chan))
        self._by_channel = {c: np.flatnonzero(chan == c) for c in self.channels_present}
        self._all = np.arange(len(chan))
        sizes = np.array([np.prod(v.shape) for v in data.volumes], dtype=np.float64)
        self._volume_p = sizes / sizes.sum()

    def _start(self, centre: int, size: int, patch: int) -> int:
        margin = patch // 8
        offset = int(self.rng.integers(margin, max(margin, patch - margin - 1) + 1))
        return int(np.clip(centre - offset, 0, max(0, size - patch)))

    def sample(self) -> Patch:
        rng = self.rng
        if not self.channels_present or rng.random() < self.background_fraction:
            vi = int(rng.choice(len(self.data.volumes), p=self._volume_p))
            v = self.data.volumes[vi]
            start = tuple(int(rng.integers(0, max(0, s - p) + 1))
                          for s, p in zip(v.shape, self.patch_size))
            kind, channel, centre_zyx = "background", 0, None
        else:
            if rng.random() < self.class_balance:
                c = self.channels_present[int(rng.integers(len(self.channels_present)))]
                pool = self._by_channel[c]
            else:
                pool = self._all
            k = int(pool[int(rng.integers(len(pool)))])
            vi, row = int(self._vol[k]), int(self._row[k])
            v = self.data.volumes[vi]
            centre = v.centres_zyx[row]
            start = tuple(self._start(int(c), s, p)
                          for c, s, p in zip(centre, v.shape, self.patch_size))
            kind, channel = "particle", int(v.centre_channels[row])
            centre_zyx = tuple(int(c) for c in centre)
        arrays = [self._crop(v.image, start), self._crop(v.labels, start),
                  self._crop(v.denoise_target, start) if self.with_denoise else None]
        flips: tuple[int, ...] = ()
        if self.augment:
            arrays, flips = augment_patch(arrays, rng, flip_probability=self.flip_probability)
        image = arrays[0]
        if self.intensity_jitter > 0:
            j = self.intensity_jitter
            scale, shift = 1.0 + rng.uniform(-j, j), rng.uniform(-j, j)
            image = (image * np.float32(scale) + np.float32(shift)).astype(np.float32)
        return Patch(image, arrays[1], arrays[2], kind, channel, vi, start, flips, centre_zyx)

    def _crop(self, volume: np.ndarray, start: Sequence[int]) -> np.ndarray:
        box = tuple(slice(a, a + p) for a, p in zip(start, self.patch_size))
        block = np.asarray(volume[box])
        if block.shape != self.patch_size:  # volume smaller than the patch: zero-pad
            full = np.zeros(self.patch_size, dtype=block.dtype)
            full[tuple(slice(0, s) for s in block.shape)] = block
            block = full
        return block

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[Patch]]:
        """``n`` patches stacked: images (n, z, y, x) float32, labels uint8, denoising targets
        (or None), and the :class:`Patch` records."""
        patches = [self.sample() for _ in range(n)]
        images = np.stack([p.image for p in patches]).astype(np.float32, copy=False)
        labels = np.stack([p.labels for p in patches])
        denoise = np.stack([p.denoise for p in patches]).astype(np.float32, copy=False) \
            if self.with_denoise else None
        return images, labels, denoise, patches


# ============================================================================ training

@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes:
        history: one record per epoch (epoch, loss, ce, tversky[, denoise], lr, time_s,
            patches_per_s, step_losses, and after validation val_loc_F1, val_mean_class_F1,
            val_per_class_F1, val_n_predicted, val_time_s).
        checkpoint: the last checkpoint.
        best_checkpoint: the best one (highest validation mean class F1, then localization F1;
            lowest epoch loss without validation).
        best_epoch: its epoch.
    """

    history: list[dict[str, Any]]
    checkpoint: Path
    best_checkpoint: Path
    best_epoch: int | None


def best_checkpoint_path(out: str | os.PathLike) -> Path:
    """Where :func:`train` writes the best checkpoint: ``NAME.best.pt`` beside ``NAME.pt``."""
    p = Path(out)
    return p.with_name(f"{p.stem}.best{p.suffix or '.pt'}")


def _class_weights(params: TrainParams, sampler: PatchSampler, n_channels: int) -> np.ndarray:
    if isinstance(params.class_weights, tuple):
        if len(params.class_weights) != n_channels:
            raise ValueError(f"class_weights has {len(params.class_weights)} values; the model "
                             f"has {n_channels} channels (background included)")
        return np.asarray(params.class_weights, dtype=np.float32)
    if params.class_weights == "none":
        return np.ones(n_channels, dtype=np.float32)
    # frequencies in patches as the sampler draws them (own generator: the training stream is
    # not touched)
    probe = PatchSampler(sampler.data, sampler.patch_size,
                         background_fraction=sampler.background_fraction,
                         class_balance=sampler.class_balance, augment=False,
                         rng=np.random.default_rng(params.seed + 7919))
    counts = np.zeros(n_channels, dtype=np.float64)
    for _ in range(64):
        counts += np.bincount(probe.sample().labels.ravel(), minlength=n_channels)[:n_channels]
    freq = counts / counts.sum()
    present = freq > 0
    weights = np.ones(n_channels, dtype=np.float64)
    weights[present] = freq[present] ** -0.5
    weights /= weights[present].min()
    weights = np.minimum(weights, 50.0)
    weights[~present] = weights[present].max()
    return weights.astype(np.float32)


def _downsample_labels(labels, stride: int, n_channels: int):
    """Majority vote over ``stride``³ blocks: (B, Z, Y, X) long → (B, Z/s, Y/s, X/s)."""
    import torch.nn.functional as F

    if stride == 1:
        return labels
    onehot = F.one_hot(labels, n_channels).permute(0, 4, 1, 2, 3).float()
    return F.avg_pool3d(onehot, stride).argmax(dim=1)


def _loss(out: dict, labels, denoise, class_weights, params: TrainParams, n_channels: int,
          stride: int) -> tuple[Any, dict[str, float]]:
    import torch
    import torch.nn.functional as F

    logits = out["logits"].float()
    target = _downsample_labels(labels, stride, n_channels)
    parts: dict[str, float] = {}
    total = logits.new_zeros(())
    if params.ce_weight > 0:
        ce = F.cross_entropy(logits, target, weight=class_weights)
        total = total + params.ce_weight * ce
        parts["ce"] = float(ce.detach())
    if params.tversky_weight > 0:
        probs = torch.softmax(logits, dim=1)
        onehot = F.one_hot(target, n_channels).permute(0, 4, 1, 2, 3).to(probs.dtype)
        dims = (0, 2, 3, 4)
        tp = (probs * onehot).sum(dims)
        fp = (probs * (1 - onehot)).sum(dims)
        fn = ((1 - probs) * onehot).sum(dims)
        eps = 1.0
        index = (tp + eps) / (tp + params.tversky_alpha * fp + params.tversky_beta * fn + eps)
        present = onehot.sum(dims) > 0
        present[0] = False  # foreground classes only
        tversky = (1 - index[present]).mean() if bool(present.any()) else logits.new_zeros(())
        total = total + params.tversky_weight * tversky
        parts["tversky"] = float(tversky.detach())
    if denoise is not None and "denoised" in out:
        mse = F.mse_loss(out["denoised"].float()[:, 0], denoise)
        total = total + params.denoise_weight * mse
        parts["denoise"] = float(mse.detach())
    return total, parts


def _scheduler(optimizer, params: TrainParams):
    import torch

    total = params.total_steps
    if params.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=params.learning_rate,
                                                   total_steps=total)
    if params.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    warmup = int(round(params.warmup_fraction * total))
    floor = 0.01

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _resolve_detect(detect_fn):
    if detect_fn is not None:
        return detect_fn
    try:
        from .detect import detect
    except ImportError as exc:
        raise ImportError(f"validation needs napari_shrec.core.detect ({exc}); pass detect_fn "
                          "or train without val_data") from None
    return detect


def validate(predictor, data: TrainingData, *, class_names: Sequence[str] | None = None,
             detect_params: Any = None, detect_fn: Callable | None = None,
             progress: ProgressCallback | None = None,
             cancel: CancelToken | None = None) -> dict[str, Any]:
    """Detect particles in each validation volume and score them (``native`` mode).

    Args:
        predictor: a ``Predictor`` (e.g. :meth:`LoadedModel.predictor`); the volumes are given
            to it normalised, so it must not normalise again (``predictor.normalize = False``
            is set when the attribute exists).
        data: volumes with ground truth (occupancy mask and particles in the volume's frame).
        class_names: the predictor's classes (default ``data.class_names``).
        detect_params: detection parameters (default: detection's defaults).
        detect_fn: ``detect(volume, predictor, params, *, class_names, slab_z, progress,
            cancel[, voxel_size_nm]) -> result with .particles`` (default
            :func:`napari_shrec.core.detect.detect`); ``voxel_size_nm`` is passed for volumes
            read from dataset folders.

    Returns:
        {"loc_F1", "mean_class_F1" (means over the volumes), "per_class_F1" (class → mean),
        "n_predicted", "per_volume": [{"name", "F1", "mean_class_F1", "recall", "precision",
        "n_predicted"}], "time_s"}.
    """
    from .score import ScoreParams, score_submission

    detect = _resolve_detect(detect_fn)
    names = tuple(class_names) if class_names is not None else data.class_names
    if hasattr(predictor, "normalize"):
        predictor.normalize = False
    start = time.perf_counter()
    per_volume = []
    per_class: dict[str, list[float]] = {}
    for v in data.volumes:
        if v.ground_truth is None:
            raise ValueError(f"{v.name}: no ground truth (occupancy mask) to validate against")
        kwargs: dict[str, Any] = {"class_names": names, "slab_z": None, "progress": progress,
                                  "cancel": cancel}
        if v.source.get("voxel_size_nm"):  # class radii in voxels
            kwargs["voxel_size_nm"] = float(v.source["voxel_size_nm"])
        result = detect(v.image, predictor, detect_params, **kwargs) if detect_params is not None \
            else detect(v.image, predictor, **kwargs)
        predictions = result.particles
        gt = v.ground_truth
        score = score_submission(gt.particles, gt.occupancy_mask, predictions,
                                 ScoreParams(mode="native"), class_table=gt.class_table,
                                 submission_name=f"validation {v.name}")
        per_volume.append({"name": v.name, "F1": float(score.F1),
                           "mean_class_F1": float(score.mean_class_F1),
                           "recall": float(score.recall), "precision": float(score.precision),
                           "n_predicted": len(predictions)})
        for name, value in score.per_class_F1.items():
            if name in names and value == value:  # not NaN
                per_class.setdefault(name, []).append(float(value))
    return {
        "loc_F1": float(np.mean([p["F1"] for p in per_volume])),
        "mean_class_F1": float(np.nanmean([p["mean_class_F1"] for p in per_volume]))
        if any(p["mean_class_F1"] == p["mean_class_F1"] for p in per_volume) else float("nan"),
        "per_class_F1": {k: float(np.mean(v)) for k, v in per_class.items()},
        "n_predicted": int(sum(p["n_predicted"] for p in per_volume)),
        "per_volume": per_volume,
        "time_s": time.perf_counter() - start,
    }


def _rng_state(sampler_rng: np.random.Generator) -> dict[str, Any]:
    import torch

    return {"numpy": sampler_rng.bit_generator.state, "torch": torch.get_rng_state()}


def train(
    data: TrainingData,
    params: TrainParams = TrainParams(),
    *,
    model_config=None,
    val_data: TrainingData | None = None,
    out: str | os.PathLike,
    resume: str | os.PathLike | None = None,
    overwrite: bool = False,
    detect_params: Any = None,
    detect_fn: Callable | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train a :class:`~napari_shrec.core.nets.unet.UNet3D` (see the module docstring).

    Args:
        data: training tomograms.
        params: :class:`TrainParams`.
        model_config: the architecture (default: ``UNet3DConfig(n_classes=len(classes) + 1)``
            with a denoising head when the data have a denoising target); with ``resume`` the
            checkpoint's (a different one given here is an error).
        val_data: validation tomograms with ground truth (same classes); None: no validation.
        out: the last checkpoint's path; the best goes to :func:`best_checkpoint_path`.
        resume: a checkpoint written by :func:`train` to continue from (its weights,
            optimiser, schedule, random states and history); training runs on up to
            ``params.epochs``.
        overwrite: replace existing checkpoints at ``out`` (files written by this run are
            always replaced; resuming from ``out`` itself needs no ``overwrite``).
        detect_params, detect_fn: for validation (:func:`validate`).
        progress: ``(step, total_steps, message)`` after every step.
        cancel: checked before every step; :class:`~napari_shrec.core.progress.Cancelled` is
            raised, the checkpoints of finished epochs stay.
        on_epoch: called with each epoch's history record.

    Returns:
        a :class:`TrainResult`.
    """
    import torch

    from ..io._atomic import check_overwrite
    from .devices import resolve_torch_device
    from .nets.checkpoint import UNetPredictor, save_checkpoint
    from .nets.unet import UNet3D, UNet3DConfig, count_parameters

    out_path = Path(out)
    best_path = best_checkpoint_path(out_path)
    resume_path = Path(resume) if resume is not None else None
    for p in (out_path, best_path):
        if not (resume_path is not None and p.exists() and p.resolve() in
                {resume_path.resolve(), best_checkpoint_path(resume_path).resolve()}):
            check_overwrite(p, overwrite)
    if val_data is not None:
        _resolve_detect(detect_fn)
        if tuple(val_data.class_names) != tuple(data.class_names):
            raise ValueError(f"validation classes {val_data.class_names} differ from the "
                             f"training classes {data.class_names}")
    device = resolve_torch_device(params.device)
    cuda = device.startswith("cuda")
    use_amp = bool(params.amp and cuda)
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    payload = None
    if resume_path is not None:
        if not resume_path.is_file():
            raise FileNotFoundError(f"no such checkpoint to resume from: {resume_path}")
        from .nets.checkpoint import load_checkpoint

        loaded = load_checkpoint(resume_path)
        if model_config is not None and model_config != loaded.config:
            raise ValueError(f"{resume_path}: the checkpoint's architecture {loaded.config} "
                             f"differs from model_config {model_config}")
        if tuple(loaded.class_names) != tuple(data.class_names):
            raise ValueError(f"{resume_path}: the checkpoint's classes {loaded.class_names} "
                             f"differ from the training data's {data.class_names}")
        if loaded.optimizer_state is None:
            raise ValueError(f"{resume_path}: no optimiser state to resume from")
        payload = loaded
        config = loaded.config
    else:
        config = model_config if model_config is not None else UNet3DConfig(
            n_classes=data.n_channels, denoise_head=data.has_denoise_target)
    if payload is not None and start_epoch_of(payload) >= params.epochs:
        raise ValueError(f"{resume_path}: already trained for {payload.epoch} epochs; raise "
                         f"params.epochs (now {params.epochs}) to train on")
    if config.n_classes != data.n_channels:
        raise ValueError(f"the model has {config.n_classes} output channels but the data "
                         f"{data.n_channels} (background + {len(data.class_names)} classes)")
    if config.denoise_head and not data.has_denoise_target:
        raise ValueError("the model has a denoising head but the training data have no "
                         "denoising target (TrainingData.from_folders(..., denoise=True))")
    config.check_input_shape(params.patch_size)

    old_threads = torch.get_num_threads()
    if params.threads > 0:
        torch.set_num_threads(params.threads)
    try:
        torch.manual_seed(params.seed)
        model = UNet3D(config).to(device)
        rng = np.random.default_rng(params.seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.learning_rate,
                                      weight_decay=params.weight_decay)
        scheduler = _scheduler(optimizer, params)
        history: list[dict[str, Any]] = []
        start_epoch = 0
        if payload is not None:
            model.load_state_dict(payload.model.state_dict())
            state = payload.optimizer_state
            optimizer.load_state_dict(state["optimizer"])  # moves the moments to the model
            scheduler.load_state_dict(state["scheduler"])
            rng.bit_generator.state = state["rng"]["numpy"]
            torch.set_rng_state(state["rng"]["torch"])
            history = list(payload.history)
            start_epoch = start_epoch_of(payload)
        sampler = PatchSampler(data, params.patch_size,
                               background_fraction=params.background_fraction,
                               class_balance=params.class_balance, augment=params.augment,
                               flip_probability=params.flip_probability,
                               intensity_jitter=params.intensity_jitter, rng=rng,
                               with_denoise=config.denoise_head)
        weights = torch.as_tensor(_class_weights(params, sampler, data.n_channels),
                                  device=device)
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16) \
            if cuda else None
        n_params = count_parameters(model)
        provenance = {
            "training": {
                "params": params.to_dict(),
                "seed": params.seed,
                "device": device,
                "amp": use_amp,
                "torch_threads": torch.get_num_threads(),
                "model_parameters": n_params,
                "class_weights": [float(w) for w in weights.cpu()],
                "data": data.describe(),
                "val_data": val_data.describe() if val_data is not None else None,
                "denoise_target": "grandmodel_noisefree / its standard deviation"
                if config.denoise_head else None,
                "resumed_from": str(resume_path) if resume_path else None,
            },
        }
        best_key = _best_key(history)
        best_epoch = _best_epoch(history)
        total_steps = (params.epochs - start_epoch) * params.steps_per_epoch
        done_steps = 0
        if progress is not None:
            progress(0, total_steps, "training")
        for epoch in range(start_epoch + 1, params.epochs + 1):
            model.train()
            t0 = time.perf_counter()
            step_losses: list[float] = []
            sums: dict[str, float] = {}
            for _ in range(params.steps_per_epoch):
                if cancel is not None:
                    cancel.raise_if_cancelled()
                images, labels, denoise, _ = sampler.batch(params.batch_size)
                x = torch.from_numpy(images)[:, None].to(device)
                y = torch.from_numpy(labels.astype(np.int64)).to(device)
                d = torch.from_numpy(denoise).to(device) if denoise is not None else None
                with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
                    output = model(x)
                loss, parts = _loss(output, y, d, weights, params, data.n_channels,
                                    config.output_stride)
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if params.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip_norm)
                if scaler is not None and scaler.is_enabled():
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                scheduler.step()
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise FloatingPointError(f"epoch {epoch}: the loss is {value}; lower the "
                                             "learning rate")
                step_losses.append(value)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                done_steps += 1
                if progress is not None:
                    progress(done_steps, total_steps,
                             f"epoch {epoch}/{params.epochs}: loss {value:.4f}")
            elapsed = time.perf_counter() - t0
            n = len(step_losses)
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": float(np.mean(step_losses)),
                **{k: v / n for k, v in sums.items()},
                "lr": float(scheduler.get_last_lr()[0]),
                "time_s": elapsed,
                "patches_per_s": n * params.batch_size / elapsed if elapsed > 0 else float("nan"),
                "step_losses": step_losses,
            }
            if val_data is not None and (epoch % params.validate_every == 0
                                         or epoch == params.epochs):
                model.eval()
                predictor = UNetPredictor(model, class_names=data.class_names,
                                          normalization=data.normalization,
                                          patch_size=params.patch_size, device=device,
                                          normalize=False)
                metrics = validate(predictor, val_data, class_names=data.class_names,
                                   detect_params=detect_params, detect_fn=detect_fn,
                                   cancel=cancel)
                record.update({"val_loc_F1": metrics["loc_F1"],
                               "val_mean_class_F1": metrics["mean_class_F1"],
                               "val_per_class_F1": metrics["per_class_F1"],
                               "val_n_predicted": metrics["n_predicted"],
                               "val_time_s": metrics["time_s"]})
                model.train()
            history.append(record)
            key = _record_key(record)
            state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": _rng_state(rng)}
            common = dict(class_names=data.class_names, normalization=data.normalization,
                          provenance=provenance, optimizer_state=state, epoch=epoch,
                          history=history, overwrite=True)
            model.eval()
            save_checkpoint(out_path, model, config, **common)
            if best_key is None or key > best_key:
                best_key, best_epoch = key, epoch
                save_checkpoint(best_path, model, config, **{**common, "optimizer_state": None})
            if on_epoch is not None:
                on_epoch(dict(record))
        if not best_path.exists() and out_path.exists():  # resumed after the last epoch
            best_path = out_path
        return TrainResult(history, out_path, best_path, best_epoch)
    finally:
        if params.threads > 0:
            torch.set_num_threads(old_threads)


def start_epoch_of(loaded) -> int:
    """Epochs a loaded checkpoint has finished (0 when unknown)."""
    return int(loaded.epoch or 0)


def _record_key(record: dict[str, Any]) -> tuple[float, ...]:
    """Higher is better: validation mean class F1, then localization F1; else −loss."""
    if "val_loc_F1" in record:
        m = record["val_mean_class_F1"]
        return (1.0, m if m == m else -1.0, record["val_loc_F1"])
    return (0.0, -record["loss"], 0.0)


def _best_key(history: list[dict[str, Any]]) -> tuple[float, ...] | None:
    return max((_record_key(r) for r in history), default=None)


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    if not history:
        return None
    return max(history, key=_record_key)["epoch"]


def tune_thresholds(
    model,
    val_data: TrainingData,
    *,
    min_score: float = 0.3,
    detect_params: Any = None,
    rescore: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, Any]:
    """Per-class detection thresholds of a trained model, tuned on validation volumes,
    and its candidate rescorer (:mod:`napari_shrec.core.rescore`).

    Each volume is searched with ``min_score`` (low, so thresholds can go below the default
    0.5), and :func:`~napari_shrec.core.detect.tune_class_thresholds` picks each class's
    threshold that maximises its localization F1; with several volumes a class's threshold is
    the mean over them.

    Args:
        model: a :class:`~napari_shrec.core.nets.checkpoint.LoadedModel`.
        val_data: volumes with ground truth, the model's classes.
        min_score: candidate threshold (and the lowest tuned threshold).
        detect_params: other detection parameters (default: the model's saved ones).
        rescore: also fit a :class:`~napari_shrec.core.rescore.CandidateRescorer` on the
            validation candidates and tune the thresholds of its scores.

    Returns:
        {"params": DetectParams with ``min_score`` and the tuned ``class_thresholds`` (on the
        rescored scores when a rescorer was fitted), "params_without_rescorer": the same with
        thresholds on the peak values, "rescorer": the rescorer or None, "rescorer_note": why
        there is none (None when there is one or ``rescore`` is False), "per_volume":
        [{class: threshold}] (peak values), "n_candidates": [...]}.
    """
    from .detect import detect, mean_class_thresholds, tune_class_thresholds
    from .rescore import DEFAULT_IMAGE_RADII_VOX, DEFAULT_RADII_VOX, tune_rescorer

    if tuple(val_data.class_names) != tuple(model.class_names):
        raise ValueError(f"validation classes {val_data.class_names} differ from the model's "
                         f"{model.class_names}")
    base = detect_params if detect_params is not None else model.detect_params()
    candidates_params = base.replace(min_score=float(min_score), class_thresholds=None)
    predictor = model.predictor()
    predictor.normalize = False  # TrainingVolume images are normalised already
    per_volume: list[dict[str, float]] = []
    counts: list[int] = []
    candidates: list[tuple[Any, Any, Any]] = []
    for v in val_data.volumes:
        if v.ground_truth is None:
            raise ValueError(f"{v.name}: no ground truth (occupancy mask) to tune against")
        kwargs: dict[str, Any] = {}
        if v.source.get("voxel_size_nm"):
            kwargs["voxel_size_nm"] = float(v.source["voxel_size_nm"])
        result = detect(v.image, predictor, candidates_params, class_names=model.class_names,
                        feature_radii_vox=DEFAULT_RADII_VOX if rescore else None,
                        image_radii_vox=DEFAULT_IMAGE_RADII_VOX if rescore else None,
                        progress=progress, cancel=cancel, **kwargs)
        gt = v.ground_truth
        candidates.append((result.particles, result.features, gt))
        per_volume.append(tune_class_thresholds(
            result, gt.particles, gt.occupancy_mask, model.class_names,
            class_table=gt.class_table, floor=float(min_score), cancel=cancel))
        counts.append(len(result.particles))
    peak_params = base.replace(min_score=float(min_score),
                               class_thresholds=mean_class_thresholds(per_volume))
    rescorer, note, params = None, None, peak_params
    if rescore:
        try:
            tuning = tune_rescorer(candidates, model.class_names, cancel=cancel,
                                   image_radii_vox=DEFAULT_IMAGE_RADII_VOX,
                                   fitted_on={"volumes": [v.name for v in val_data.volumes]})
        except ValueError as exc:
            note = str(exc)
        else:
            rescorer = tuning.rescorer
            params = base.replace(min_score=float(min_score),
                                  class_thresholds=tuning.thresholds)
    return {"params": params, "params_without_rescorer": peak_params, "rescorer": rescorer,
            "rescorer_note": note, "per_volume": per_volume, "n_candidates": counts}


def store_detection_settings(checkpoint: str | os.PathLike, params: Any, *,
                             patch_size: Sequence[int] | None = None,
                             tuned_on: Sequence[str] = (),
                             rescorer: Any = None,
                             params_without_rescorer: Any = None,
                             out: str | os.PathLike | None = None,
                             overwrite: bool = False) -> Path:
    """Save ``params`` (a DetectParams) as the recommended detection settings of a checkpoint,
    with its candidate ``rescorer`` (a :class:`~napari_shrec.core.rescore.CandidateRescorer`)
    and the settings to use without it (``params_without_rescorer``), when given.

    Writes ``out`` (default: the checkpoint itself, which then needs ``overwrite``); the
    weights, history and optimiser state are kept as they are.
    """
    import torch

    from ..io._atomic import atomic_path
    from .nets.checkpoint import load_checkpoint

    src = Path(checkpoint)
    dst = Path(out) if out is not None else src
    loaded = load_checkpoint(src)  # validates the file
    payload = torch.load(src, map_location="cpu", weights_only=True)
    payload["detection"] = {
        "patch_size": [int(s) for s in (patch_size or loaded.patch_size)],
        "params": params.to_dict(),
        "tuned_on": [str(t) for t in tuned_on],
    }
    if rescorer is not None:
        payload["detection"]["rescorer"] = rescorer.to_dict()
    if params_without_rescorer is not None:
        payload["detection"]["params_without_rescorer"] = params_without_rescorer.to_dict()
    with atomic_path(dst, overwrite=overwrite or dst.resolve() == src.resolve()) as tmp:
        torch.save(payload, tmp)
    return dst
