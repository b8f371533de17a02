"""The structure library: one potential map (V) per particle class, at any voxel size.

:class:`StructureLibrary` resolves each class to a source, in this order:

1. a file given for that class explicitly (``files={"1bxn": "path/to/1bxn.cif"}``);
2. the source folders, in order (files named by PDB id, atomic models before maps);
3. an earlier download in the cache directory;
4. a download from the RCSB by PDB id (when ``download=True``; the first failure turns further
   downloads off for this library, so an offline machine does not wait once per class);
5. the class's offline surrogate shape (when ``surrogates=True``), with a
   :class:`StructureFallbackWarning`.

Atomic models become maps by :func:`~napari_shrec.core.potential.potential_from_atoms`; maps are
resampled by :func:`~napari_shrec.core.potential.potential_from_map` and, unless they are
napari-shrec potentials already (a ``structures.json`` beside them says so), rescaled to volts
from the class's molecular weight. Every map carries :class:`ShapeMetrics` and a provenance
dictionary whose ``kind`` is ``"atomic-model"``, ``"map"`` or ``"surrogate"``.

Computed maps are cached under ``<cache>/maps/`` as MRC + JSON, keyed by a hash of the source
file's bytes, the parameters and the algorithm version: the second build of the same set takes
well under a second.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .classes import SHREC20_TABLE, ClassTable, ParticleClass
from .progress import CancelToken, ProgressCallback, ProgressReporter
from .shape_metrics import DEFAULT_MASK_THRESHOLD_V, ShapeMetrics, shape_metrics
from .structure_sources import (
    StructureDownloadError,
    default_cache_dir,
    download_structure,
    file_sha256,
    find_structure_file,
    is_atomic_model_file,
    is_map_file,
    is_pdb_id,
)

__all__ = [
    "ALGORITHM_VERSION",
    "StructureParams",
    "StructureMap",
    "StructureSource",
    "StructureLibrary",
    "StructureUnavailableError",
    "StructureFallbackWarning",
    "STRUCTURES_JSON",
]

log = logging.getLogger(__name__)

ALGORITHM_VERSION = 1
"""Bumped whenever a change alters computed maps, so that stale cache entries are not reused."""
STRUCTURES_JSON = "structures.json"


class StructureUnavailableError(LookupError):
    """No source for a class and no surrogate allowed (or possible); the message says why."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StructureFallbackWarning(UserWarning):
    """A class uses its offline surrogate shape instead of its real structure."""


@dataclass(frozen=True)
class StructureParams:
    """How to turn sources into maps.

    Attributes:
        voxel_size_nm: edge of the cubic output voxels (nm).
        b_factor_a2: isotropic B-factor (Å²) added to every atom.
        use_atom_b_factors: add each atom's own B-factor too.
        resolution_nm: optional Gaussian blur (molmap convention σ = 0.225 · resolution).
        implicit_hydrogens: add hydrogens of standard amino acids (see atomic_model).
        assembly: "auto", "deposited" or an assembly name ("1", …) for atomic models.
        margin_nm: empty margin around the structure in the box.
        mask_threshold_v: threshold of the shape mask (V).
        rescale_maps: put maps of arbitrary units into volts from the class weight.
    """

    voxel_size_nm: float = 1.0
    b_factor_a2: float = 0.0
    use_atom_b_factors: bool = False
    resolution_nm: float | None = None
    implicit_hydrogens: bool = True
    assembly: str = "auto"
    margin_nm: float = 1.0
    mask_threshold_v: float = DEFAULT_MASK_THRESHOLD_V
    rescale_maps: bool = True

    def __post_init__(self) -> None:
        if not self.voxel_size_nm > 0:
            raise ValueError(f"voxel_size_nm must be > 0, got {self.voxel_size_nm}")
        if self.b_factor_a2 < 0:
            raise ValueError(f"b_factor_a2 must be ≥ 0, got {self.b_factor_a2}")
        if self.resolution_nm is not None and not self.resolution_nm > 0:
            raise ValueError(f"resolution_nm must be > 0 or None, got {self.resolution_nm}")
        if self.margin_nm < 0:
            raise ValueError(f"margin_nm must be ≥ 0, got {self.margin_nm}")
        if not self.mask_threshold_v > 0:
            raise ValueError(f"mask_threshold_v must be > 0, got {self.mask_threshold_v}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StructureSource:
    """Where a class's map comes from: ``kind`` is "atomic-model", "map", "download" (to be
    fetched), "surrogate" or "missing"; ``path`` is the file for the first two."""

    name: str
    kind: str
    path: Path | None = None
    detail: str = ""


@dataclass(frozen=True)
class StructureMap:
    """A class's potential map.

    Attributes:
        name: class name (lower-case PDB id for proteins).
        potential: float32 array (z, y, x), cubic, odd edge, centre at n // 2; volts.
        voxel_size_nm: isotropic voxel size.
        metrics: shape statistics at ``provenance["params"]["mask_threshold_v"]``.
        provenance: how the map was made (kind, source, sha256, assembly, params, versions).
    """

    name: str
    potential: np.ndarray
    voxel_size_nm: float
    metrics: ShapeMetrics
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.provenance.get("kind", ""))

    @property
    def is_surrogate(self) -> bool:
        return bool(self.provenance.get("surrogate", False))

    @property
    def shape_mask(self) -> np.ndarray:
        return self.potential >= self.metrics.threshold_v

    def summary(self) -> dict[str, Any]:
        """JSON-ready record: metrics, provenance, map shape."""
        return {"name": self.name, "shape_zyx": list(self.potential.shape),
                "voxel_size_nm": self.voxel_size_nm, "metrics": self.metrics.to_dict(),
                "provenance": self.provenance}


def _package_version() -> str:
    from .. import __version__

    return __version__


def _cache_key(name: str, source_digest: str, params: StructureParams) -> str:
    payload = json.dumps({"name": name, "source": source_digest, "params": params.to_dict(),
                          "algorithm": ALGORITHM_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _class_digest(cls: ParticleClass) -> str:
    return "surrogate:" + json.dumps([cls.name, cls.weight_kda, cls.volume_nm3, cls.sphericity])


def _napari_shrec_potential_record(path: Path) -> dict[str, Any] | None:
    """The record of a map written by :meth:`StructureLibrary.write`, from the folder's
    structures.json, or None for foreign maps."""
    index = path.parent / STRUCTURES_JSON
    if not index.is_file():
        return None
    try:
        records = json.loads(index.read_text(encoding="utf-8")).get("maps", {})
    except (OSError, ValueError):
        return None
    for record in records.values():
        if record.get("file") == path.name and record.get("units") == "V":
            return record
    return None


class StructureLibrary:
    """Resolve classes to sources and build (cached) potential maps.

    Args:
        sources: files or folders to search (a file counts for the class its name starts with).
        files: explicit ``class name → file`` choices, searched first.
        cache_dir: where downloads and computed maps go (default: :func:`default_cache_dir`).
        download: fetch missing PDB ids from the RCSB.
        surrogates: fall back to surrogate shapes when nothing else is available.
        use_cache: read and write computed maps in the cache.
        url_template: download URL with ``{pdb_id}`` (default RCSB mmCIF).
        class_table: classes known by name (default SHREC'20's).
    """

    def __init__(
        self,
        sources: Sequence[str | os.PathLike] = (),
        *,
        files: Mapping[str, str | os.PathLike] | None = None,
        cache_dir: str | os.PathLike | None = None,
        download: bool = True,
        surrogates: bool = True,
        use_cache: bool = True,
        url_template: str | None = None,
        class_table: ClassTable = SHREC20_TABLE,
    ) -> None:
        self.sources = [Path(s) for s in sources]
        for source in self.sources:
            if not source.exists():
                raise FileNotFoundError(f"structure source {source} does not exist")
        self.files = {class_table.canonical_name(k) if k in class_table else k.lower(): Path(v)
                      for k, v in (files or {}).items()}
        for name, path in self.files.items():
            if not path.is_file():
                raise FileNotFoundError(f"structure file for {name}: {path} does not exist")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.download = download
        self.surrogates = surrogates
        self.use_cache = use_cache
        self.url_template = url_template
        self.class_table = class_table
        self._offline_reason: str | None = None

    # -- resolving ----------------------------------------------------------------------------

    def _class(self, name_or_class: str | ParticleClass) -> ParticleClass | None:
        if isinstance(name_or_class, ParticleClass):
            return name_or_class
        return self.class_table.by_name(name_or_class) if name_or_class in self.class_table \
            else None

    def locate(self, name_or_class: str | ParticleClass) -> StructureSource:
        """Where the map of a class would come from, without building anything."""
        cls = self._class(name_or_class)
        name = cls.name if cls is not None else str(name_or_class).lower()
        if name in self.files:
            return self._file_source(name, self.files[name])
        for source in self.sources:
            if source.is_file():
                if source.name.lower().startswith(name) and (is_atomic_model_file(source)
                                                              or is_map_file(source)):
                    return self._file_source(name, source)
                continue
            found = find_structure_file(name, source)
            if found is not None:
                return self._file_source(name, found)
        if is_pdb_id(name):
            cached = find_structure_file(name, self.cache_dir / "downloads")
            if cached is not None:
                return self._file_source(name, cached, "downloaded earlier")
            if self.download and self._offline_reason is None:
                return StructureSource(name, "download", None, "from the RCSB")
        if self.surrogates and cls is not None and _surrogate_possible(cls):
            reason = "offline: " + self._offline_reason if self._offline_reason else \
                "no file found" + ("" if self.download else " and downloads are off")
            return StructureSource(name, "surrogate", None, reason)
        return StructureSource(name, "missing", None, self._missing_reason(name, cls))

    def _file_source(self, name: str, path: Path, detail: str = "") -> StructureSource:
        kind = "atomic-model" if is_atomic_model_file(path) else "map"
        return StructureSource(name, kind, path, detail)

    def _missing_reason(self, name: str, cls: ParticleClass | None) -> str:
        parts = [f"no structure file for {name!r} in "
                 + (", ".join(str(s) for s in self.sources) or "no source folders")]
        if not is_pdb_id(name):
            parts.append("it is not a PDB id, so it cannot be downloaded")
        elif self._offline_reason:
            parts.append(f"download failed ({self._offline_reason})")
        elif not self.download:
            parts.append("downloads are off")
        if cls is None:
            parts.append("it is not in the class table, so it has no surrogate")
        elif not self.surrogates:
            parts.append("surrogates are off")
        elif not _surrogate_possible(cls):
            parts.append("its class has no tabulated volume/sphericity/weight for a surrogate")
        return "; ".join(parts)

    # -- building -----------------------------------------------------------------------------

    def get(self, name_or_class: str | ParticleClass,
            params: StructureParams = StructureParams(), *, warn: bool = True) -> StructureMap:
        """The map of one class (from the cache when possible).

        A surrogate fallback emits a :class:`StructureFallbackWarning` unless ``warn`` is False
        (callers in worker threads read :attr:`StructureMap.is_surrogate` instead: changing the
        warning filters there is not thread-safe).

        Raises:
            StructureUnavailableError: no source and no surrogate.
            AtomicModelError / MrcReadError: a source file that cannot be read.
        """
        cls = self._class(name_or_class)
        source = self.locate(name_or_class)
        if source.kind == "download":
            try:
                path = download_structure(source.name, self.cache_dir,
                                          url_template=self.url_template)
                source = self._file_source(source.name, path, "downloaded")
            except StructureDownloadError as exc:
                self._offline_reason = str(exc)
                log.warning("%s", exc)
                source = self.locate(name_or_class)
        if source.kind == "missing":
            raise StructureUnavailableError(source.detail)
        if source.kind == "surrogate":
            assert cls is not None
            if warn:
                warnings.warn(
                    f"{cls.name}: using its offline surrogate shape ({source.detail}); results "
                    f"for this class are not those of the real structure",
                    StructureFallbackWarning, stacklevel=2)
            digest = _class_digest(cls)
        else:
            assert source.path is not None
            digest = file_sha256(source.path)
        key = _cache_key(source.name, digest, params)
        cached = self._read_cache(source.name, key) if self.use_cache else None
        if cached is not None:
            return cached
        structure_map = self._build(source, cls, params, digest)
        if self.use_cache:
            self._write_cache(structure_map, key)
        return structure_map

    def _build(self, source: StructureSource, cls: ParticleClass | None,
               params: StructureParams, digest: str) -> StructureMap:
        provenance: dict[str, Any] = {
            "kind": source.kind, "surrogate": source.kind == "surrogate",
            "source": str(source.path) if source.path else None, "source_sha256": None,
            "detail": source.detail, "params": params.to_dict(),
            "algorithm_version": ALGORITHM_VERSION, "napari_shrec_version": _package_version(),
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        expected_kda = cls.weight_kda if cls is not None else None
        if source.kind == "atomic-model":
            from .atomic_model import read_atomic_model
            from .potential import potential_from_atoms

            model = read_atomic_model(source.path, assembly=params.assembly,
                                      expected_mass_kda=expected_kda,
                                      implicit_hydrogens=params.implicit_hydrogens)
            potential, info = potential_from_atoms(
                model, voxel_size_nm=params.voxel_size_nm, b_factor_a2=params.b_factor_a2,
                use_atom_b_factors=params.use_atom_b_factors, resolution_nm=params.resolution_nm,
                margin_nm=params.margin_nm)
            provenance.update(
                source_sha256=digest, assembly=model.assembly,
                assembly_masses_kda={k: round(v, 3) for k, v in
                                     model.assembly_masses_kda.items()},
                model_mass_kda=round(model.mass_kda, 3), n_atoms=model.n_atoms,
                elements=list(model.elements), centre_of_mass_xyz_nm=list(info.centre_xyz_nm),
                extra_b_a2=info.extra_b_a2, units="V")
        elif source.kind == "map":
            potential, provenance = self._build_from_map(source, cls, params, provenance, digest)
        else:
            from .surrogates import surrogate_potential

            assert cls is not None
            potential, _, shape = surrogate_potential(
                volume_nm3=cls.volume_nm3, sphericity=cls.sphericity, mass_kda=cls.weight_kda,
                voxel_size_nm=params.voxel_size_nm, threshold_v=params.mask_threshold_v,
                name=cls.name)
            provenance.update(surrogate_shape=shape.to_dict(), units="V",
                              targets={"volume_nm3": cls.volume_nm3,
                                       "sphericity": cls.sphericity,
                                       "weight_kda": cls.weight_kda})
        metrics = shape_metrics(potential, params.voxel_size_nm, params.mask_threshold_v)
        return StructureMap(source.name, potential, params.voxel_size_nm, metrics, provenance)

    def _build_from_map(self, source: StructureSource, cls: ParticleClass | None,
                        params: StructureParams, provenance: dict[str, Any], digest: str
                        ) -> tuple[np.ndarray, dict[str, Any]]:
        from ..io.mrc import read_mrc
        from .potential import potential_from_map

        assert source.path is not None
        volume = read_mrc(source.path, mmap=False)
        own_record = _napari_shrec_potential_record(source.path)
        mass = None
        units = "arbitrary"
        if own_record is not None:
            units = "V"
        elif params.rescale_maps and cls is not None and cls.weight_kda:
            mass = cls.weight_kda
            units = "V"
        data = np.asarray(volume.data, dtype=np.float32)
        same_grid = np.allclose(volume.voxel_size_nm, params.voxel_size_nm, rtol=1e-4)
        if own_record is not None and same_grid and len(set(data.shape)) == 1:
            potential = data  # a napari-shrec potential on the requested grid: use as is
        else:
            potential, _ = potential_from_map(
                data, volume.voxel_size_nm, target_voxel_size_nm=params.voxel_size_nm,
                mass_kda=mass, margin_nm=params.margin_nm,
                centre="box" if own_record is not None else "mass")
        provenance.update(source_sha256=digest, units=units,
                          source_voxel_size_nm=list(volume.voxel_size_nm),
                          rescaled_to_mass_kda=mass)
        if own_record is not None:  # keep the chain: where the napari-shrec map came from
            provenance["derived_from"] = own_record.get("provenance")
            provenance["surrogate"] = bool(own_record.get("provenance", {}).get("surrogate"))
        return potential, provenance

    def build(
        self,
        classes: Iterable[str | ParticleClass] | None = None,
        params: StructureParams = StructureParams(),
        *,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        warn: bool = True,
    ) -> dict[str, StructureMap]:
        """Maps of several classes (default: every class of the table), in table order.

        Surrogate fallbacks are warned once per class (unless ``warn`` is False); the result's
        maps tell which ones are surrogates (:attr:`StructureMap.is_surrogate`).
        """
        chosen = list(self.class_table) if classes is None else list(classes)
        reporter = ProgressReporter(len(chosen), progress, cancel)
        reporter.start("structures")
        maps: dict[str, StructureMap] = {}
        for item in chosen:
            structure_map = self.get(item, params, warn=warn)
            maps[structure_map.name] = structure_map
            reporter.advance(f"{structure_map.name}: {structure_map.kind}")
        return maps

    # -- cache ---------------------------------------------------------------------------------

    def _cache_paths(self, name: str, key: str) -> tuple[Path, Path]:
        folder = self.cache_dir / "maps"
        return folder / f"{name}-{key}.mrc", folder / f"{name}-{key}.json"

    def _read_cache(self, name: str, key: str) -> StructureMap | None:
        from ..io.mrc import read_mrc

        mrc_path, json_path = self._cache_paths(name, key)
        if not (mrc_path.is_file() and json_path.is_file()):
            return None
        try:
            record = json.loads(json_path.read_text(encoding="utf-8"))
            volume = read_mrc(mrc_path, mmap=False)
            metrics = ShapeMetrics(**record["metrics"])
        except Exception as exc:  # noqa: BLE001 - a damaged cache entry is rebuilt, not fatal
            log.warning("ignoring damaged cache entry %s: %s", mrc_path, exc)
            return None
        provenance = dict(record["provenance"])
        provenance["cache"] = str(mrc_path)
        return StructureMap(name, np.asarray(volume.data, dtype=np.float32),
                            float(record["voxel_size_nm"]), metrics, provenance)

    def _write_cache(self, structure_map: StructureMap, key: str) -> None:
        from ..io._atomic import write_text_atomic
        from ..io.mrc import write_mrc

        mrc_path, json_path = self._cache_paths(structure_map.name, key)
        try:
            write_mrc(mrc_path, structure_map.potential,
                      voxel_size_nm=structure_map.voxel_size_nm, overwrite=True)
            write_text_atomic(json_path, json.dumps(structure_map.summary(), indent=1),
                              overwrite=True)
        except OSError as exc:  # a read-only cache must not stop the work
            log.warning("could not cache %s in %s: %s", structure_map.name, mrc_path.parent, exc)


def _surrogate_possible(cls: ParticleClass) -> bool:
    return bool(cls.volume_nm3 and cls.sphericity and cls.weight_kda)
