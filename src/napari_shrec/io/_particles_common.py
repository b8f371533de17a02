"""Pieces shared by the particle-list readers and writers (SHREC txt, RELION STAR, CSV)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ParticleFileError", "existing_file", "parse_float", "read_text", "where"]


class ParticleFileError(ValueError):
    """A particle file that cannot be read.

    The message always names the file and, where it applies, the 1-based line number, e.g.
    ``"/x/particle_locations.txt, line 17: expected at least 4 columns (class x y z), got 2"``.
    """


def where(path: str | os.PathLike, line: int | None = None) -> str:
    """``"<path>"`` or ``"<path>, line <n>"``: the prefix of every ParticleFileError message."""
    return f"{path}" if line is None else f"{path}, line {line}"


def existing_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path; FileNotFoundError if it does not exist, ParticleFileError if a folder."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such particle file: {p}")
    if not p.is_file():
        raise ParticleFileError(f"{p}: not a file")
    return p


def read_text(path: Path) -> str:
    """The file's text (UTF-8, a byte-order mark is dropped); ParticleFileError if not UTF-8."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParticleFileError(f"{path}: not a UTF-8 text file ({exc})") from None


def parse_float(token: str) -> float:
    """A number as written in a text file (int or float syntax) → float.

    Raises ValueError for anything else. Python's ``float`` also accepts digit separators
    ("1_000"); a text file never means that, so they are refused.
    """
    text = token.strip()
    if "_" in text:
        raise ValueError(token)
    return float(text)
