"""Where structures come from: local files, folders named by PDB id, and downloads from the RCSB.

- A folder source holds files named by PDB id, any case: ``1bxn.cif``, ``1BXN.cif.gz``,
  ``1bxn.pdb``, ``pdb1bxn.ent.gz``, ``1bxn.mrc`` … Atomic models win over maps of the same id.
- Downloads fetch ``https://files.rcsb.org/download/{pdb_id}.cif.gz`` (override with the
  ``NAPARI_SHREC_PDB_URL`` environment variable or ``url_template``; it must contain
  ``{pdb_id}``) into ``<cache>/downloads/``, with retries, written under a temporary name and
  renamed only once complete.
- The cache directory is ``NAPARI_SHREC_CACHE_DIR`` when set, else the ``cache_dir`` of the
  settings file (:mod:`napari_shrec.settings`), else the platform's user cache directory
  (``platformdirs.user_cache_dir("napari-shrec")``, e.g. ``~/.cache/napari-shrec``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = [
    "ATOMIC_MODEL_SUFFIXES",
    "MAP_SUFFIXES",
    "DEFAULT_PDB_URL",
    "PDB_URL_ENV",
    "CACHE_DIR_ENV",
    "StructureDownloadError",
    "default_cache_dir",
    "download_structure",
    "file_sha256",
    "find_structure_file",
    "is_atomic_model_file",
    "is_map_file",
    "is_pdb_id",
]

log = logging.getLogger(__name__)

ATOMIC_MODEL_SUFFIXES: tuple[str, ...] = (
    ".cif", ".mmcif", ".pdb", ".ent", ".cif.gz", ".mmcif.gz", ".pdb.gz", ".ent.gz")
MAP_SUFFIXES: tuple[str, ...] = (".mrc", ".map", ".ccp4")
DEFAULT_PDB_URL = "https://files.rcsb.org/download/{pdb_id}.cif.gz"
PDB_URL_ENV = "NAPARI_SHREC_PDB_URL"
CACHE_DIR_ENV = "NAPARI_SHREC_CACHE_DIR"
_PDB_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")


class StructureDownloadError(OSError):
    """A structure could not be downloaded; the message names the id, the URL and the cause."""


def is_pdb_id(name: str) -> bool:
    """True for a four-character PDB id (digit + three alphanumerics), e.g. ``"1bxn"``."""
    return bool(_PDB_ID.match(name))


def _lower_name(path: Path) -> str:
    return path.name.lower()


def is_atomic_model_file(path: str | os.PathLike) -> bool:
    return _lower_name(Path(path)).endswith(ATOMIC_MODEL_SUFFIXES)


def is_map_file(path: str | os.PathLike) -> bool:
    return _lower_name(Path(path)).endswith(MAP_SUFFIXES)


def default_cache_dir() -> Path:
    """``$NAPARI_SHREC_CACHE_DIR``, else the settings file's ``cache_dir``
    (:mod:`napari_shrec.settings`), else the user cache directory of napari-shrec."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:  # without reading the settings file, so a broken file cannot block it
        return Path(env).expanduser()
    from ..settings import settings_or_defaults

    return settings_or_defaults().cache_dir


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_structure_file(pdb_id: str, folder: str | os.PathLike) -> Path | None:
    """The file for ``pdb_id`` in ``folder`` (atomic models first, then maps), or None."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    wanted = pdb_id.lower()
    atomic: list[Path] = []
    maps: list[Path] = []
    for entry in sorted(folder.iterdir()):
        name = entry.name.lower()
        if not entry.is_file():
            continue
        for suffix in ATOMIC_MODEL_SUFFIXES:
            if name in (wanted + suffix, "pdb" + wanted + suffix):
                atomic.append(entry)
        for suffix in MAP_SUFFIXES:
            if name == wanted + suffix:
                maps.append(entry)
    # Prefer mmCIF (complete assemblies, no 99 999-atom limit) over PDB, plain over gzipped.
    atomic.sort(key=lambda p: (not _lower_name(p).startswith(wanted + ".cif"),
                               _lower_name(p).endswith(".gz")))
    return (atomic or maps or [None])[0]


def _url_for(pdb_id: str, url_template: str | None) -> str:
    template = url_template or os.environ.get(PDB_URL_ENV) or DEFAULT_PDB_URL
    if "{pdb_id}" not in template:
        raise ValueError(f"URL template {template!r} must contain {{pdb_id}}")
    return template.format(pdb_id=pdb_id.lower())


def _download_name(pdb_id: str, url: str) -> str:
    path = urllib.request.urlparse(url).path.lower()
    for suffix in sorted(ATOMIC_MODEL_SUFFIXES, key=len, reverse=True):
        if path.endswith(suffix):
            return pdb_id.lower() + suffix
    return pdb_id.lower() + ".cif"


def _looks_like_structure(first_bytes: bytes) -> bool:
    """Gzip magic, or text that starts like mmCIF/PDB (not an HTML error page)."""
    if first_bytes[:2] == b"\x1f\x8b":
        return True
    head = first_bytes.lstrip()[:200].lower()
    return not (head.startswith(b"<") or b"<html" in head)


def _not_worth_retrying(exc: Exception) -> bool:
    """A missing entry (HTTP 404) or an offline machine (unknown host, connection refused):
    retrying at once would fail the same way."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code == 404
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError))


def download_structure(
    pdb_id: str,
    cache_dir: str | os.PathLike | None = None,
    *,
    url_template: str | None = None,
    retries: int = 3,
    timeout_s: float = 30.0,
    backoff_s: float = 0.5,
    overwrite: bool = False,
) -> Path:
    """Download a structure by PDB id into ``<cache_dir>/downloads/`` and return its path.

    An earlier download is reused unless ``overwrite``. Each failed try waits ``backoff_s``,
    doubling, before the next (an unknown host, a refused connection or HTTP 404 stop at once:
    the machine is offline or the entry does not exist); after ``retries`` tries :class:`StructureDownloadError` explains
    what failed and how to proceed offline.
    """
    from ..io._atomic import atomic_path

    if not is_pdb_id(pdb_id):
        raise ValueError(f"{pdb_id!r} is not a PDB id (a digit and three letters or digits)")
    url = _url_for(pdb_id, url_template)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = folder / "downloads" / _download_name(pdb_id, url)
    if target.exists() and not overwrite:
        return target
    last_error: Exception | None = None
    wait = backoff_s
    for attempt in range(1, max(1, retries) + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                payload = response.read()
            if not payload or not _looks_like_structure(payload[:512]):
                raise StructureDownloadError(f"{url} returned no structure file")
            with atomic_path(target, overwrite=True) as tmp:
                tmp.write_bytes(payload)
            log.info("downloaded %s from %s (%d bytes)", pdb_id, url, len(payload))
            return target
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            last_error = exc
            if _not_worth_retrying(exc):
                break
            log.warning("download of %s from %s failed (try %d of %d): %s",
                        pdb_id, url, attempt, retries, exc)
            if attempt < retries:
                time.sleep(wait)
                wait *= 2.0
    raise StructureDownloadError(
        f"could not download {pdb_id} from {url}: {last_error}. If this machine is offline, "
        f"put {pdb_id}.cif (or .pdb) in a folder and pass it as a source (CLI: --source DIR), "
        f"or let napari-shrec use its surrogate shape")
