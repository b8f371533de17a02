"""MRC/CCP4 volumes (``.mrc .rec .map .st .mrcs``) ⇄ :class:`~napari_shrec.core.volume.Volume`.

Reading memory-maps the file by default (opening a 512³ float32 map costs milliseconds; pages are
read only when touched). The MRC header stores the voxel size in Å per axis (x, y, z); the Volume
holds nm in (z, y, x). Writing goes to a temporary file that is renamed onto the target, and refuses
to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mrcfile
import numpy as np

from ..core.volume import Volume
from ._atomic import atomic_path

__all__ = ["read_mrc", "write_mrc", "read_mrc_header", "MRC_SUFFIXES", "MrcReadError"]

log = logging.getLogger(__name__)

MRC_SUFFIXES: tuple[str, ...] = (".mrc", ".rec", ".map", ".st", ".mrcs", ".ali", ".ccp4")
DEFAULT_VOXEL_SIZE_NM = 1.0
_LABEL = b"written by napari-shrec".ljust(80)  # the SHREC'20 voxel size, used when a header holds none


class MrcReadError(ValueError):
    """An MRC file that cannot be read; the message names the file."""


def _voxel_size_nm_from_header(mrc: mrcfile.mrcfile.MrcFile, path: Path,
                               default_nm: float) -> tuple[tuple[float, float, float], bool]:
    """(z, y, x) voxel size in nm and whether it came from the header.

    x and y must be positive in the header (else the default for all axes); a missing z spacing
    (0, as 2D images and many tilt stacks have) takes the x spacing."""
    vs = mrc.voxel_size  # record array in Å: x, y, z
    x_a, y_a, z_a = float(vs.x), float(vs.y), float(vs.z)
    if not all(np.isfinite(v) and v > 0 for v in (x_a, y_a)):
        log.warning("%s: header has no voxel size ((x, y, z) = (%g, %g, %g) Å); assuming %s nm",
                    path, x_a, y_a, z_a, default_nm)
        return (default_nm, default_nm, default_nm), False
    if not (np.isfinite(z_a) and z_a > 0):
        z_a = x_a
    return (z_a / 10.0, y_a / 10.0, x_a / 10.0), True


def read_mrc(path: str | os.PathLike, *, mmap: bool = True,
             default_voxel_size_nm: float = DEFAULT_VOXEL_SIZE_NM) -> Volume:
    """Read an MRC file as a :class:`Volume` with data (z, y, x).

    Args:
        path: the file.
        mmap: memory-map the data (read-only ``numpy.memmap``); False reads it into memory.
        default_voxel_size_nm: voxel size used when the header holds none (0 Å).

    Raises:
        FileNotFoundError: the file does not exist.
        MrcReadError: the file is not a readable MRC file (message names the file and the cause).
    """
    p = Path(path)
    with _open_mrc(p, mmap) as (mrc, caught):
        header = _header_fields(mrc, p, default_voxel_size_nm)
        if mmap:
            # a plain numpy memmap of the data block, independent of the MrcFile's lifetime
            data = np.memmap(p, dtype=mrc.data.dtype, mode="r", offset=mrc.data.offset,
                             shape=mrc.data.shape)
        else:
            data = np.array(mrc.data)
    if data.ndim == 2:
        data = data[np.newaxis]
    metadata = {
        "source": str(p),
        "voxel_size_from_header": header["voxel_size_from_header"],
        "mrc_mode": header["mode"],
        "is_image_stack": header["is_image_stack"],
    }
    if caught:
        metadata["header_warnings"] = _warning_text(caught)
    return Volume(data=data, voxel_size_nm=header["voxel_size_nm"], origin_nm=header["origin_nm"],
                  metadata=metadata)


def read_mrc_header(path: str | os.PathLike) -> dict:
    """Shape (z, y, x), dtype, voxel size (nm, z y x) and origin of an MRC file, without its data."""
    p = Path(path)
    with _open_mrc(p, mmap=True) as (mrc, _):
        return _header_fields(mrc, p, DEFAULT_VOXEL_SIZE_NM)


@contextmanager
def _open_mrc(p: Path, mmap: bool) -> Iterator[tuple[mrcfile.mrcfile.MrcFile, list]]:
    """Open ``p`` read-only (permissive), yield it with the header warnings, always close it.

    Raises FileNotFoundError, or MrcReadError naming the file."""
    if not p.is_file():
        raise FileNotFoundError(f"no such MRC file: {p}")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mrc = (mrcfile.mmap if mmap else mrcfile.open)(p, mode="r", permissive=True)
    except (ValueError, OSError, EOFError) as exc:
        raise MrcReadError(f"{p}: cannot read as MRC: {exc}") from exc
    try:
        if mrc.data is None:
            raise MrcReadError(f"{p}: not a valid MRC file ({_warning_text(caught)})")
        yield mrc, caught
    except (ValueError, OSError, EOFError) as exc:
        if isinstance(exc, MrcReadError):
            raise
        raise MrcReadError(f"{p}: cannot read as MRC: {exc}") from exc
    finally:
        mrc.close()


def _header_fields(mrc: mrcfile.mrcfile.MrcFile, p: Path, default_voxel_size_nm: float) -> dict:
    vs, from_header = _voxel_size_nm_from_header(mrc, p, default_voxel_size_nm)
    o = mrc.header.origin
    shape = mrc.data.shape if mrc.data.ndim == 3 else (1,) + mrc.data.shape
    return {
        "path": str(p),
        "shape_zyx": tuple(int(n) for n in shape),
        "dtype": str(mrc.data.dtype),
        "voxel_size_nm": vs,
        "voxel_size_from_header": from_header,
        "origin_nm": (float(o.z) / 10.0, float(o.y) / 10.0, float(o.x) / 10.0),
        "mode": int(mrc.header.mode),
        "is_image_stack": bool(mrc.is_image_stack()),
    }


_MRC_DTYPES = (np.int8, np.int16, np.uint16, np.float32, np.complex64, np.uint8, np.float16)


def write_mrc(path: str | os.PathLike, volume: Volume | np.ndarray, *,
              voxel_size_nm: float | tuple[float, float, float] | None = None,
              overwrite: bool = False, image_stack: bool = False) -> Path:
    """Write a volume (or a (z, y, x) array) to an MRC file, atomically.

    Args:
        path: target file; FileExistsError if it exists and ``overwrite`` is False.
        volume: a :class:`Volume` (its voxel size and origin are written) or an array.
        voxel_size_nm: overrides the volume's voxel size (nm; scalar or (z, y, x)).
        overwrite: replace an existing file.
        image_stack: mark the file as a stack of 2D images (tilt series), MRC ispg 0.

    Data types MRC cannot hold (float64, int32, int64, bool, …) are converted: floats to
    float32, integers to int16 when their range fits, else to float32.
    """
    if isinstance(volume, Volume):
        data = np.asarray(volume.data)
        vs = volume.voxel_size_nm if voxel_size_nm is None else voxel_size_nm
        origin = volume.origin_nm
    else:
        data = np.asarray(volume)
        vs = 1.0 if voxel_size_nm is None else voxel_size_nm
        origin = (0.0, 0.0, 0.0)
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise ValueError(f"{path}: MRC data must be 2D or 3D (z, y, x), got shape {data.shape}")
    data = _to_mrc_dtype(data)
    vz, vy, vx = (float(v) for v in np.broadcast_to(np.asarray(vs, dtype=float), (3,)))

    with atomic_path(path, overwrite=overwrite) as tmp:
        # Written slab by slab into a memory-mapped file, with the header statistics summed
        # slab-wise: mrcfile's set_data would copy the whole volume and its statistics would
        # make whole-volume temporaries (a 512³ float32 volume then costs 3× its size).
        mode = int(mrcfile.utils.mode_from_dtype(data.dtype))
        with mrcfile.new_mmap(tmp, shape=data.shape, mrc_mode=mode, overwrite=True) as mrc:
            _copy_with_stats(data, mrc)
            mrc.voxel_size = (vx * 10.0, vy * 10.0, vz * 10.0)
            mrc.header.origin = (origin[2] * 10.0, origin[1] * 10.0, origin[0] * 10.0)
            if image_stack:
                mrc.set_image_stack()
            else:
                mrc.set_volume()
            # mrcfile's default label holds the creation time; a fixed label makes the same
            # data give the same bytes (reproducible simulations).
            mrc.header.label[0] = _LABEL
            mrc.header.nlabl = 1
    return Path(path)


_SLAB_BYTES = 64 * 2 ** 20


def _copy_with_stats(data: np.ndarray, mrc: mrcfile.mrcfile.MrcFile) -> None:
    """Copy ``data`` into the memory-mapped ``mrc.data`` slab by slab and set dmin, dmax,
    dmean and rms (standard deviation) in the header, as mrcfile would."""
    nz = data.shape[0]
    slab = max(1, _SLAB_BYTES // max(1, data[0].nbytes))
    total, total_sq, count = 0.0, 0.0, 0
    lo, hi = np.inf, -np.inf
    for z0 in range(0, nz, slab):
        block = np.asarray(data[z0:z0 + slab])
        mrc.data[z0:z0 + slab] = block
        if block.size == 0 or np.iscomplexobj(block):
            continue
        values = block.astype(np.float64)
        lo = min(lo, float(values.min()))
        hi = max(hi, float(values.max()))
        total += float(values.sum())
        total_sq += float((values * values).sum())
        count += values.size
    if count:
        mean = total / count
        mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
        mrc.header.rms = float(np.sqrt(max(total_sq / count - mean * mean, 0.0)))


def _to_mrc_dtype(data: np.ndarray) -> np.ndarray:
    if data.dtype in _MRC_DTYPES:
        return data
    if data.dtype == bool:
        return data.astype(np.int8)
    if np.issubdtype(data.dtype, np.integer):
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        if lo >= -32768 and hi <= 32767:
            return data.astype(np.int16)
        if lo >= 0 and hi <= 65535:
            return data.astype(np.uint16)
        return data.astype(np.float32)
    if np.issubdtype(data.dtype, np.complexfloating):
        return data.astype(np.complex64)
    return data.astype(np.float32)


def _warning_text(caught: list) -> str:
    return "; ".join(str(w.message) for w in caught) or "no data block"
