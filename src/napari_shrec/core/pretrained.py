"""The detector model shipped with napari-shrec, and detection with any saved model.

The shipped model (``napari_shrec/models/shrec2020_unet.pt``) is a
:class:`~napari_shrec.core.nets.unet.UNet3D` trained by ``scripts/train_default_model.py`` on
``shrec2020``-preset tomograms simulated with fixed seeds by ``scripts/make_training_set.py``
(the recipe and its figures are in ``docs/results.md``). Its checkpoint carries the patch size
and the per-class thresholds tuned on a validation tomogram, so :func:`detect_with_model` with
no parameters detects the way the shipped figures were measured.

Conventions: the tomogram is (z, y, x); ``slab_z`` is a half-open voxel range in z; voxel sizes
are nm.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .progress import CancelToken, ProgressCallback
from .volume import Volume

if TYPE_CHECKING:  # torch is imported only when a model is loaded
    from .detect import DetectionResult, DetectParams
    from .nets.checkpoint import LoadedModel

__all__ = ["DEFAULT_MODEL_NAME", "default_model_path", "load_model", "detect_with_model"]

DEFAULT_MODEL_NAME = "shrec2020_unet.pt"


def default_model_path() -> Path:
    """Where the shipped model lies inside the installed package.

    Raises:
        FileNotFoundError: the package was installed without it (a source checkout whose
            ``models/`` folder was deleted, say); the message says how to get a model.
    """
    path = Path(str(resources.files("napari_shrec") / "models" / DEFAULT_MODEL_NAME))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped detector model is missing ({path}); reinstall napari-shrec, or train "
            "a model (napari-shrec train, or the Train widget) and choose its checkpoint "
            "(--model, or 'Checkpoint file' in the Detect widget)")
    return path


def load_model(path: str | os.PathLike | None = None, device: str = "auto") -> LoadedModel:
    """A saved model (``path``), or the shipped one (None), on ``device``
    ("auto": CUDA → MPS → CPU)."""
    from .nets.checkpoint import load_checkpoint

    return load_checkpoint(default_model_path() if path is None else path, device=device)


def detect_with_model(
    volume_zyx: np.ndarray | Volume,
    model: LoadedModel,
    params: DetectParams | None = None,
    *,
    voxel_size_nm: float | None = None,
    slab_z: tuple[int, int] | None = None,
    patch_size: tuple[int, int, int] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    rescore: bool = True,
    feature_radii_vox: Sequence[float] | None = None,
    image_radii_vox: Sequence[float] | None = None,
    **param_overrides: Any,
) -> DetectionResult:
    """Detect the particles of a tomogram with a loaded model.

    The tomogram is normalised with its own statistics over ``slab_z`` (as in training), then
    :func:`~napari_shrec.core.detect.detect` runs with the model's classes (in blocks when the
    probability maps would exceed ``params.max_memory_mb``).

    Args:
        volume_zyx: the tomogram (z, y, x), raw values (any real dtype), or a
            :class:`~napari_shrec.core.volume.Volume` (its voxel size is used when
            ``voxel_size_nm`` is None). Lazy arrays are fine and are never read whole: a
            memmap (MRC), a dask array (OME-Zarr, :func:`~napari_shrec.io.zarr.open_ome_zarr`)
            or a zarr array; the normalisation statistics come from a regular sub-sample (read
            chunk by chunk), detection reads one row of patches at a time.
        model: from :func:`load_model` or
            :func:`~napari_shrec.core.nets.checkpoint.load_checkpoint`.
        params: detection parameters; None: those saved with the model (tuned thresholds
            included), else the defaults. ``param_overrides`` replace single fields.
        voxel_size_nm: voxel edge (nm), for the class radii; default the volume's, else 1.
        slab_z: (z_start, z_stop) holding the sample; None: the whole tomogram.
        patch_size: (z, y, x) patch; None: the model's recommendation.
        progress, cancel: as in :func:`~napari_shrec.core.detect.detect`.
        rescore: use the model's candidate rescorer (:attr:`LoadedModel.rescorer`) when it
            has one; False: classes and scores are the maps' peaks (pass ``params`` from
            ``model.detect_params(rescore=False)``, whose thresholds are on peak values).
        feature_radii_vox, image_radii_vox: with ``rescore=False``, return the candidates'
            features at these radii (to fit a rescorer; see :func:`detect`).

    Returns:
        :class:`~napari_shrec.core.detect.DetectionResult`; its particles' metadata records the
        model file and its creation.
    """
    from .detect import detect

    data = volume_zyx.data if isinstance(volume_zyx, Volume) else volume_zyx
    if voxel_size_nm is None:
        voxel_size_nm = (float(np.mean(volume_zyx.voxel_size_nm))
                         if isinstance(volume_zyx, Volume) else 1.0)
    if params is None:
        params = model.detect_params(rescore=rescore)
    if param_overrides:
        params = params.replace(**param_overrides)
    predictor = model.predictor(patch_size=patch_size)
    predictor.prepare(data, slab_z=slab_z)
    result = detect(data, predictor, params, class_names=model.class_names,
                    voxel_size_nm=float(voxel_size_nm), slab_z=slab_z,
                    rescorer=model.rescorer if rescore else None,
                    feature_radii_vox=feature_radii_vox, image_radii_vox=image_radii_vox,
                    progress=progress, cancel=cancel)
    result.particles.metadata.update(
        model=str(model.path) if model.path else None,
        model_created=model.provenance.get("created"),
        detector="napari-shrec unet3d")
    return result
