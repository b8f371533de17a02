"""Model checkpoints: save and load a :class:`~napari_shrec.core.nets.unet.UNet3D` with everything
needed to use it, and wrap a loaded model as a detection ``Predictor``.

A checkpoint is one ``torch.save`` file (conventionally ``.pt``) holding a dict::

    format            "napari-shrec.unet3d"
    format_version    1
    state_dict        the weights (float32, or float16 when saved with weights_dtype="float16")
    config            UNet3DConfig.to_dict()
    class_names       output channel k ≥ 1 is class_names[k − 1]; channel 0 is background
    normalization     the input normalisation method (napari_shrec.core.nets.normalize)
    provenance        napari_shrec_version, torch_version, created (UTC), plus what the caller
                      gives (training data, seed, parameters, device, …)
    history           per-epoch training records (list of dicts)
    optimizer_state   optimiser/scheduler/random states for resuming (or None)
    epoch             epochs completed (or None)
    detection         optional: how to detect with this model, {"patch_size": [z, y, x],
                      "params": DetectParams.to_dict() (per-class thresholds tuned on
                      validation data included), "tuned_on": provenance}; older files lack it

Everything in it is plain Python, strings, numbers and tensors, so it loads with
``torch.load(weights_only=True)`` — no code from the file is ever run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..devices import resolve_torch_device
from .normalize import (
    NormalizationStats,
    apply_normalization,
    check_normalization,
    normalization_stats,
)
from .unet import UNet3D, UNet3DConfig

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "LoadedModel",
    "UNetPredictor",
    "save_checkpoint",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "napari-shrec.unet3d"
CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable napari-shrec model checkpoint (the message names it)."""


def _plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, tuples and paths turned into plain Python (so the
    file loads with ``weights_only=True``); tensors are kept."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, dict):
        return {str(k) if not isinstance(k, (int, str)) else k: _plain(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool):
        return value
    for kind in (str, int, float):  # exact types (torch.__version__ is a str subclass)
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def save_checkpoint(
    path: str | os.PathLike,
    model: UNet3D,
    config: UNet3DConfig,
    *,
    class_names: Sequence[str],
    normalization: dict[str, Any],
    provenance: dict[str, Any] | None = None,
    optimizer_state: dict[str, Any] | None = None,
    epoch: int | None = None,
    history: list[dict[str, Any]] | None = None,
    overwrite: bool = False,
    weights_dtype: str = "float32",
    detection: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (a crash never leaves a half-written file).

    Args:
        path: the file (``.pt``).
        model: the network (its weights are copied to the CPU).
        config: its architecture; ``config.n_classes`` must be ``len(class_names) + 1``.
        class_names: the class of each output channel after background.
        normalization: the input normalisation method (checked).
        provenance: free record (data, seed, parameters…); version and time are added.
        optimizer_state: optimiser, scheduler and random states for resuming.
        epoch: epochs completed.
        history: per-epoch training records.
        overwrite: replace an existing file (else FileExistsError).
        weights_dtype: "float32", or "float16" to halve the file (for shipping; loading
            converts back to float32).
        detection: recommended detection settings ({"patch_size": [z, y, x], "params":
            ``DetectParams.to_dict()``, …}), used by :meth:`LoadedModel.detect_params`.

    Returns:
        the path written.
    """
    from ... import __version__
    from ...io._atomic import atomic_path

    names = [str(n) for n in class_names]
    if config.n_classes != len(names) + 1:
        raise ValueError(f"config.n_classes is {config.n_classes} but {len(names)} class names "
                         "were given (n_classes counts background too)")
    if len(set(names)) != len(names):
        raise ValueError(f"class_names repeat a class: {names}")
    if weights_dtype not in ("float32", "float16"):
        raise ValueError(f"weights_dtype must be 'float32' or 'float16', got {weights_dtype!r}")
    dtype = torch.float16 if weights_dtype == "float16" else torch.float32
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    record = {
        "napari_shrec_version": __version__,
        "torch_version": torch.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **(provenance or {}),
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "state_dict": state,
        "config": config.to_dict(),
        "class_names": names,
        "normalization": check_normalization(normalization),
        "provenance": _plain(record),
        "history": _plain(list(history or [])),
        "optimizer_state": _plain(optimizer_state) if optimizer_state is not None else None,
        "epoch": None if epoch is None else int(epoch),
        "detection": _plain(detection) if detection is not None else None,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


@dataclass
class LoadedModel:
    """A checkpoint read back (:func:`load_checkpoint`).

    Attributes:
        model: the network, in eval mode, on ``device``.
        config: its architecture.
        class_names: class of output channel k ≥ 1 (``class_names[k − 1]``).
        normalization: the input normalisation method.
        provenance, history, optimizer_state, epoch: as saved.
        path: the file.
        device: where the model is.
        detection: recommended detection settings saved with the model (or None).
    """

    model: UNet3D
    config: UNet3DConfig
    class_names: tuple[str, ...]
    normalization: dict[str, Any]
    provenance: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None
    epoch: int | None = None
    path: Path | None = None
    device: str = "cpu"
    detection: dict[str, Any] | None = None

    @property
    def patch_size(self) -> tuple[int, int, int]:
        """The patch size to detect with: the saved recommendation, else the training
        patch, else 64³."""
        saved = (self.detection or {}).get("patch_size")
        if saved is None:
            saved = ((self.provenance.get("training") or {}).get("params") or {}).get(
                "patch_size")
        return tuple(int(s) for s in saved) if saved else (64, 64, 64)  # type: ignore

    @property
    def rescorer(self):
        """The :class:`~napari_shrec.core.rescore.CandidateRescorer` saved with the model
        (``detection["rescorer"]``), or None."""
        from ..rescore import CandidateRescorer

        saved = (self.detection or {}).get("rescorer")
        if not saved:
            return None
        try:
            return CandidateRescorer.from_dict(saved)
        except ValueError as exc:
            raise ValueError(f"{self.path}: {exc}") from None

    def detect_params(self, *, rescore: bool = True, **overrides: Any):
        """:class:`~napari_shrec.core.detect.DetectParams` saved with the model (its tuned
        per-class thresholds included), else the defaults; ``overrides`` replace fields.

        A model with a :attr:`rescorer` keeps two sets: ``detection["params"]`` (thresholds
        on the rescored scores) and ``detection["params_without_rescorer"]`` (on the peak
        values), which ``rescore=False`` returns."""
        from ..detect import DetectParams

        detection = self.detection or {}
        key = "params" if rescore or not detection.get("params_without_rescorer") \
            else "params_without_rescorer"
        saved = dict(detection.get(key) or {})
        known = set(DetectParams.__dataclass_fields__)
        values = {k: v for k, v in saved.items() if k in known}
        values.update(overrides)
        return DetectParams(**values)

    def predictor(self, patch_size: tuple[int, int, int] | None = None,
                  device: str | None = None) -> UNetPredictor:
        """A detection ``Predictor`` of this model (see :class:`UNetPredictor`).

        Args:
            patch_size: (z, y, x) patch the caller should feed (multiples of ``2**depth``);
                None: :attr:`patch_size`.
            device: "auto", "cpu", "cuda", "mps"…; None keeps the model's device.
        """
        return UNetPredictor(self.model, class_names=self.class_names,
                             normalization=self.normalization,
                             patch_size=self.patch_size if patch_size is None else patch_size,
                             device=self.device if device is None else device)


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> LoadedModel:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the file.
        device: where to put the model ("auto": CUDA, else MPS, else CPU).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is not a napari-shrec model checkpoint, or is damaged (the
            message names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no such model checkpoint: {p}")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike
        raise CheckpointError(f"{p}: not a napari-shrec model checkpoint (torch.load failed: "
                              f"{_reason(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not a napari-shrec model checkpoint (no "
                              f"'format: {CHECKPOINT_FORMAT}' record)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {version!r} is newer than this "
                              f"napari-shrec reads ({CHECKPOINT_VERSION}); update napari-shrec")
    try:
        config = UNet3DConfig.from_dict(dict(payload["config"]))
        class_names = tuple(str(n) for n in payload["class_names"])
        normalization = check_normalization(dict(payload["normalization"]))
        model = UNet3D(config)
        state = {k: (v.float() if v.is_floating_point() else v)
                 for k, v in payload["state_dict"].items()}
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{p}: damaged napari-shrec model checkpoint: "
                              f"{type(exc).__name__}: {exc}") from None
    if config.n_classes != len(class_names) + 1:
        raise CheckpointError(f"{p}: {config.n_classes} output channels but "
                              f"{len(class_names)} class names")
    resolved = resolve_torch_device(device)
    model.to(resolved).eval()
    return LoadedModel(model=model, config=config, class_names=class_names,
                       normalization=normalization,
                       provenance=dict(payload.get("provenance") or {}),
                       history=list(payload.get("history") or []),
                       optimizer_state=payload.get("optimizer_state"),
                       epoch=payload.get("epoch"), path=p, device=resolved,
                       detection=payload.get("detection"))


class UNetPredictor:
    """A trained :class:`UNet3D` as the ``Predictor`` that detection calls.

    ``predictor(patch)`` takes a float (Z, Y, X) patch of the tomogram — or a batch (N, Z, Y, X)
    — and returns float32 class probabilities (C, Z/s, Y/s, X/s) (or (N, C, …)), channel 0
    background, channel k ``class_names[k − 1]``, s = ``output_stride``. It normalises the patch,
    runs the model under ``torch.no_grad()`` (autocast to float16 on CUDA) and applies a softmax.

    Normalisation, in order of preference:

    1. after :meth:`prepare` (``predictor.prepare(tomogram, slab_z)``): the tomogram's own
       statistics (:func:`~napari_shrec.core.nets.normalize.normalization_stats`), exactly as in
       training, applied to each patch;
    2. ``normalize=False``: the caller already normalised the volume (e.g. with
       :func:`~napari_shrec.core.nets.normalize.normalize_volume`); patches are used as given;
    3. otherwise each patch's own statistics (a 64³ patch of a noisy tomogram gives nearly the
       tomogram's; with instance normalisation the first layer removes most of the difference).

    Patches whose sizes are not multiples of ``2**depth`` are zero-padded (0 is the median after
    normalisation) and the output cropped to ``ceil(size / s)``.

    Attributes:
        patch_size: the (z, y, x) patch size detection should use.
        output_stride: the model's output stride.
        class_names, normalization, n_classes, config, model, device.
        stats: the :class:`NormalizationStats` set by :meth:`prepare` (None before).
        normalize: False when the caller feeds normalised patches.
    """

    def __init__(self, model: UNet3D, *, class_names: Sequence[str],
                 normalization: dict[str, Any], patch_size: tuple[int, int, int] = (64, 64, 64),
                 device: str = "cpu", normalize: bool = True) -> None:
        self.config: UNet3DConfig = model.config
        self.config.check_input_shape(tuple(patch_size))
        self.patch_size: tuple[int, int, int] = tuple(int(s) for s in patch_size)  # type: ignore
        self.output_stride: int = int(self.config.output_stride)
        self.class_names: tuple[str, ...] = tuple(str(n) for n in class_names)
        self.n_classes: int = self.config.n_classes
        self.normalization = check_normalization(normalization)
        self.device: str = resolve_torch_device(device)
        self.model = model.to(self.device).eval()
        self.stats: NormalizationStats | None = None
        self.normalize = bool(normalize)

    def prepare(self, volume_zyx: np.ndarray, slab_z: tuple[int, int] | None = None
                ) -> NormalizationStats:
        """Fix the normalisation to ``volume_zyx``'s statistics (from the slab ``slab_z``)."""
        self.stats = normalization_stats(volume_zyx, self.normalization, slab_z=slab_z)
        self.normalize = True
        return self.stats

    def _normalised(self, patch: np.ndarray) -> np.ndarray:
        if not self.normalize:
            return np.asarray(patch, dtype=np.float32)
        stats = self.stats if self.stats is not None else normalization_stats(
            patch, self.normalization)
        return apply_normalization(patch, stats)

    def __call__(self, patch: np.ndarray) -> np.ndarray:
        array = np.asarray(patch)
        if array.ndim == 3:
            return self.predict_batch(array[None])[0]
        if array.ndim == 4:
            return self.predict_batch(array)
        raise ValueError(f"a patch must be (z, y, x) or (n, z, y, x), got shape {array.shape}")

    def predict_batch(self, patches: np.ndarray) -> np.ndarray:
        """(N, Z, Y, X) patches → (N, C, Z/s, Y/s, X/s) float32 probabilities."""
        array = np.asarray(patches)
        if array.ndim != 4:
            raise ValueError(f"predict_batch expects (n, z, y, x) patches, got shape "
                             f"{array.shape}")
        if self.stats is not None or not self.normalize:
            batch = self._normalised(array)
        else:  # per-patch statistics
            batch = np.stack([self._normalised(p) for p in array])
        sizes = batch.shape[1:]
        m = self.config.input_multiple
        padded = tuple(-(-s // m) * m for s in sizes)
        if padded != sizes:
            full = np.zeros((batch.shape[0], *padded), dtype=np.float32)
            full[:, :sizes[0], :sizes[1], :sizes[2]] = batch
            batch = full
        s = self.output_stride
        out_sizes = tuple(-(-n // s) for n in sizes)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)[:, None]
        with torch.no_grad():
            if self.device.startswith("cuda"):
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = self.model(x, with_denoised=False)["logits"]
            else:
                logits = self.model(x, with_denoised=False)["logits"]
            probs = torch.softmax(logits.float(), dim=1)
        probs = probs[:, :, :out_sizes[0], :out_sizes[1], :out_sizes[2]]
        return np.ascontiguousarray(probs.cpu().numpy(), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"UNetPredictor(classes={len(self.class_names)}, patch_size={self.patch_size}, "
                f"output_stride={self.output_stride}, device={self.device!r})")


def _reason(exc: BaseException) -> str:
    """One line of an exception: its most specific "…error: …" line, else its first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if "error:" in line.lower()]
    text = (specific or lines or [""])[-1 if specific else 0]
    return f"{type(exc).__name__}: {text[:300]}"
