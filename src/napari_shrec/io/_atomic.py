"""Safe file writing: refuse to overwrite unless asked, write to a temporary name, then rename."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_path", "check_overwrite"]


def check_overwrite(path: Path, overwrite: bool) -> None:
    """Raise FileExistsError naming ``path`` if it exists and ``overwrite`` is False."""
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (CLI: --overwrite) to replace it"
        )


@contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary file keeps the target's suffix (some writers look at it). On any error the
    temporary file is removed and ``path`` is left untouched.
    """
    target = Path(path)
    check_overwrite(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not overwrite and target.exists():  # appeared while we were writing
            raise FileExistsError(f"{target} appeared while writing; not overwritten")
        # mkstemp makes the file 0600; give it the target's mode, or the umask's default
        os.chmod(tmp, _final_mode(target))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _final_mode(target: Path) -> int:
    """The permission bits a new file would get (0666 minus the umask), or the target's own."""
    if target.exists():
        return stat.S_IMODE(target.stat().st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_text_atomic(path: str | os.PathLike, text: str, overwrite: bool = False) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_with(path: str | os.PathLike, writer: Callable[[Path], None], overwrite: bool) -> Path:
    """Call ``writer(tmp_path)`` and move the result onto ``path`` atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        writer(tmp)
    return Path(path)
