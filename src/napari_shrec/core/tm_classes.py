"""Template matching of several classes: templates from the structure library, one
:func:`~napari_shrec.core.tm.match_template` per class, candidates per class, one selection over
all classes (:mod:`napari_shrec.core.tm_select`).

Memory: a class's maps (float32 scores + int32 angle indices, 8 bytes per voxel: 420 MB for
512 × 512 × 200) are reduced to its candidates as soon as it is matched; they are kept only with
``keep_maps`` (or handed to ``on_class_done``, e.g. to write them to disk).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import SHREC21_TABLE, ClassTable, normalize_class_name
from .particles import ParticleList
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .structures import StructureLibrary, StructureMap, StructureParams
from .tm import MatchParams, MatchResult, match_template
from .tm_select import Candidates, SelectParams, find_candidates, select_particles

__all__ = ["MultiMatchResult", "match_classes", "dataset_templates", "simulated_microscope"]

_STEPS_PER_CLASS = 1000


@dataclass
class MultiMatchResult:
    """What :func:`match_classes` found.

    Attributes:
        particles: the selected picks (x, y, z voxels of the tomogram, ZXZ angles, FLCF score),
            in selection order.
        candidates: {class: its candidates}.
        results: {class: :class:`MatchResult`} with the full maps (only with ``keep_maps``).
        class_info: {class: {"angles": n, "angular_step_deg": s, "mask_radius_vox": r,
            "seconds": t, "surrogate": bool}}.
        timings_s: "templates", "matching", "selection", "total".
        slab_z: searched z range.
    """

    particles: ParticleList
    candidates: dict[str, Candidates]
    results: dict[str, MatchResult]
    class_info: dict[str, dict[str, Any]]
    timings_s: dict[str, float]
    slab_z: tuple[int, int]
    match_params: MatchParams
    select_params: SelectParams
    metadata: dict[str, Any] = field(default_factory=dict)


def match_classes(
    volume_zyx: Any,
    class_names: Sequence[str],
    params: MatchParams = MatchParams(),
    select: SelectParams = SelectParams(),
    *,
    templates: Mapping[str, np.ndarray | StructureMap] | None = None,
    library: StructureLibrary | None = None,
    structure_params: StructureParams | None = None,
    voxel_size_nm: float | None = None,
    slab_z: tuple[int, int] | None = None,
    angles_zxz_deg: np.ndarray | None = None,
    class_table: ClassTable | None = None,
    keep_maps: bool = False,
    on_class_done: Callable[[str, MatchResult], None] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> MultiMatchResult:
    """Match every class and select the picks.

    Args:
        volume_zyx: (Z, Y, X) tomogram (array or Volume).
        class_names: classes to match.
        params: matching parameters (one set for every class; the Crowther step, when
            ``angular_step_deg`` is None, follows each class's own mask diameter).
        select: selection parameters.
        templates: {class: potential cube or StructureMap}; classes not in it come from
            ``library``.
        library: structure library (default ``StructureLibrary()``: source folders from
            ``$NAPARI_SHREC_STRUCTURES``, downloads, surrogates).
        structure_params: how the library builds maps (default: voxel size of the tomogram).
        voxel_size_nm: tomogram voxel size (default: the Volume's, else 1).
        slab_z: (start, stop) z slices searched.
        angles_zxz_deg: one rotation list for every class (default: each class's own).
        class_table: class table for radii, weights and canonical names (default SHREC'21's).
        keep_maps: keep each class's :class:`MatchResult` in ``results``.
        on_class_done: ``on_class_done(class_name, result)`` after each class (before its maps
            are dropped).
        progress: overall ``progress(done, total, message)``.
        cancel: checked at every rotation.
    """
    from .detect import class_radius_nm
    from .tm import _voxel_size

    t0 = time.perf_counter()
    names = [normalize_class_name(n) for n in class_names]
    if not names:
        raise ValueError("no classes to match")
    if len(set(names)) != len(names):
        raise ValueError(f"classes listed twice: {', '.join(class_names)}")
    table = class_table if class_table is not None else SHREC21_TABLE
    voxel = _voxel_size(volume_zyx, voxel_size_nm)
    reporter = ProgressReporter(len(names) * _STEPS_PER_CLASS + 1, progress, cancel)
    reporter.start("templates")
    maps = _templates(names, templates or {}, library, structure_params, voxel)
    t_templates = time.perf_counter()

    candidates: dict[str, Candidates] = {}
    results: dict[str, MatchResult] = {}
    info: dict[str, dict[str, Any]] = {}
    searched = (0, 0)
    for k, name in enumerate(names):
        reporter.check()
        template, surrogate = maps[name]

        def inner(done: int, total: int, message: str, _k: int = k, _name: str = name) -> None:
            if progress is not None:
                step = int(_STEPS_PER_CLASS * done / total) if total else 0
                progress(_k * _STEPS_PER_CLASS + step, reporter.total, f"{_name}: {message}")

        t_class = time.perf_counter()
        result = match_template(volume_zyx, template, params, voxel_size_nm=voxel,
                                slab_z=slab_z, angles_zxz_deg=angles_zxz_deg,
                                progress=inner if progress is not None else None,
                                cancel=cancel)
        radius = class_radius_nm(name, table, select.fallback_radius_nm) / voxel
        weight = table.by_name(name).weight_kda if name in table else None
        candidates[name] = find_candidates(
            result.scores, name, radius, angle_index=result.angle_index,
            angles_zxz_deg=result.angles_zxz_deg, slab_z=result.slab_z, params=select,
            weight_kda=weight)
        info[name] = {"angles": result.n_angles, "angular_step_deg": result.angular_step_deg,
                      "mask_radius_vox": result.mask_radius_vox,
                      "seconds": time.perf_counter() - t_class, "surrogate": surrogate,
                      "device": result.device, "per_angle_s": result.timings_s["per_angle"]}
        searched = result.slab_z
        if on_class_done is not None:
            on_class_done(name, result)
        if keep_maps:
            results[name] = result
        del result
        reporter.done = (k + 1) * _STEPS_PER_CLASS
        reporter.advance(f"{name}: {len(candidates[name])} candidates", steps=0)
    t_matching = time.perf_counter()
    particles = select_particles(list(candidates.values()), select, voxel_size_nm=voxel,
                                 class_table=table)
    t_end = time.perf_counter()
    z0, z1 = searched
    particles.metadata.update(match_params=params.to_dict(), select_params=select.to_dict(),
                              slab_z=[int(z0), int(z1)], classes=info)
    reporter.advance("selection")
    return MultiMatchResult(
        particles=particles, candidates=candidates, results=results, class_info=info,
        timings_s={"templates": t_templates - t0, "matching": t_matching - t_templates,
                   "selection": t_end - t_matching, "total": t_end - t0},
        slab_z=(int(z0), int(z1)), match_params=params, select_params=select)


def _templates(names: Sequence[str], given: Mapping[str, np.ndarray | StructureMap],
               library: StructureLibrary | None, structure_params: StructureParams | None,
               voxel: float) -> dict[str, tuple[np.ndarray, bool]]:
    """{class: (potential cube, is surrogate)} from ``given`` or the library."""
    lookup = {normalize_class_name(k): v for k, v in given.items()}
    sp = structure_params if structure_params is not None \
        else StructureParams(voxel_size_nm=voxel)
    if not np.isclose(sp.voxel_size_nm, voxel, rtol=1e-4):
        raise ValueError(f"structure_params.voxel_size_nm ({sp.voxel_size_nm} nm) differs from "
                         f"the tomogram's voxel size ({voxel} nm)")
    out: dict[str, tuple[np.ndarray, bool]] = {}
    for name in names:
        item = lookup.get(name)
        if item is None:
            if library is None:
                library = StructureLibrary(_default_sources())
            item = library.get(name, sp, warn=False)
        if isinstance(item, StructureMap):
            if not np.isclose(item.voxel_size_nm, voxel, rtol=1e-4):
                raise ValueError(f"template {name}: voxel size {item.voxel_size_nm} nm differs "
                                 f"from the tomogram's {voxel} nm")
            out[name] = (np.asarray(item.potential, dtype=np.float32), item.is_surrogate)
        else:
            out[name] = (np.asarray(item, dtype=np.float32), False)
    return out


def _default_sources() -> tuple[str, ...]:
    from .simulate import default_structure_sources

    return default_structure_sources()


def dataset_templates(
    class_names: Sequence[str],
    simulation: Mapping[str, Any] | None,
    voxel_size_nm: float,
    *,
    sources: Sequence[str | Path] = (),
    download: bool = True,
    surrogates: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> dict[str, StructureMap]:
    """The templates of a dataset: the structures its simulation used when it says.

    With a napari-shrec ``simulation.json`` record, a class simulated with its surrogate shape
    gets that surrogate as template, a class built from a file that still exists gets that file,
    both with the simulation's structure parameters. Other classes (and every class without a
    record) come from ``sources`` (then the library's usual order: cache, download, surrogate).
    """
    record = dict(simulation or {})
    sim_params = dict(record.get("params", {}) or {})
    sp_record = dict(sim_params.get("structure_params", {}) or {})
    known = {k: v for k, v in sp_record.items() if k in StructureParams.__dataclass_fields__}
    known["voxel_size_nm"] = voxel_size_nm
    sp = StructureParams(**known) if sp_record else StructureParams(voxel_size_nm=voxel_size_nm)
    structures = dict(record.get("structures", {}) or {})
    surrogate_classes = {normalize_class_name(n) for n in record.get("surrogate_classes", [])}
    files: dict[str, str] = {}
    for name, entry in structures.items():
        source = (entry or {}).get("source")
        if source and not (entry or {}).get("surrogate") and Path(source).is_file():
            files[normalize_class_name(name)] = source
    all_sources = [str(s) for s in sources] or list(_default_sources())
    all_sources += [s for s in sim_params.get("structure_sources", []) or []
                    if Path(s).exists() and s not in all_sources]
    library = StructureLibrary(all_sources, files=files, download=download,
                               surrogates=surrogates)
    offline = StructureLibrary((), download=False, surrogates=True)
    reporter = ProgressReporter(len(class_names), progress, cancel)
    reporter.start("templates")
    out: dict[str, StructureMap] = {}
    for raw in class_names:
        name = normalize_class_name(raw)
        use = offline if name in surrogate_classes and not sources else library
        out[name] = use.get(name, sp, warn=False)
        reporter.advance(f"{name}: {out[name].kind}")
    return out


def simulated_microscope(simulation: dict[str, Any] | None) -> dict[str, float]:
    """The CTF settings (defocus, voltage, Cs, amplitude contrast) of a napari-shrec simulation
    record; {} without one (the MatchParams defaults: SHREC'20's)."""
    tilt = ((simulation or {}).get("params", {}) or {}).get("tiltseries", {}) or {}
    out: dict[str, float] = {}
    for key in ("defocus_um", "voltage_kv", "cs_mm", "amplitude_contrast"):
        value = tilt.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out
