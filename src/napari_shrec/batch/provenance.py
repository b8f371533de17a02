"""When is a batch task finished? Provenance records of batch outputs, and the state of an output.

A task's output is *finished* only when its provenance record exists, says ``"finished"`` and
holds the same parameters as the task (compared as JSON, with thread counts left out: they never
change a result). Two kinds of record:

- a simulated dataset folder: its own ``simulation.json`` (written last by
  :func:`~napari_shrec.core.simulate.run_simulation`; the batch writes the folder under a
  temporary name and renames it, so a folder under its final name is always complete);
- any other output file (a reconstruction, a particle list, a score): a sidecar
  ``<output>.provenance.json`` beside it, written with ``"status": "writing"`` *before* the
  output and rewritten with ``"status": "finished"`` after the output was renamed into place.
  A ``"writing"`` record marks an output of an interrupted batch task, which a later batch may
  replace; an output without a record, or with other parameters, belongs to somebody else and is
  replaced only when the user asks (``overwrite``).

Nothing here imports dask, napari or Qt.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from ..io._json import json_default, read_json_object

__all__ = [
    "SIDECAR_SUFFIX",
    "OutputState",
    "sidecar_path",
    "normalized",
    "same_params",
    "file_output_state",
    "folder_output_state",
    "write_sidecar",
    "read_json",
    "file_stamp",
]

SIDECAR_SUFFIX = ".provenance.json"

OutputState = Literal["missing", "finished", "interrupted", "foreign"]
"""``missing``: nothing there; ``finished``: done with these parameters (skip);
``interrupted``: a batch task's unfinished output (the batch may replace it); ``foreign``: a file
or folder the batch did not finish with these parameters (replace only with ``overwrite``)."""

_IGNORED_KEYS = frozenset({"threads"})


def sidecar_path(output: str | os.PathLike) -> Path:
    """``<output>.provenance.json`` beside ``output``."""
    out = Path(output)
    return out.with_name(out.name + SIDECAR_SUFFIX)


def normalized(params: Any) -> Any:
    """``params`` as it reads back from JSON (tuples → lists, numpy scalars → numbers), without
    the keys that never change a result (``threads``)."""
    plain = json.loads(json.dumps(params, default=json_default))
    return _drop_ignored(plain)


def _drop_ignored(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_ignored(v) for k, v in value.items() if k not in _IGNORED_KEYS}
    if isinstance(value, list):
        return [_drop_ignored(v) for v in value]
    return value


def same_params(recorded: Any, params: Any) -> bool:
    """Whether a recorded parameter set equals ``params`` (see :func:`normalized`)."""
    return normalized(recorded) == normalized(params)


#: the JSON object in a file; None when it is missing or unreadable (a torn write)
read_json = read_json_object


def file_output_state(output: str | os.PathLike, params: dict[str, Any]) -> OutputState:
    """The state of a file output with a sidecar record (see the module docstring)."""
    out = Path(output)
    record = read_json(sidecar_path(out))
    ours = record is not None and bool(record.get("batch"))
    if ours and record.get("status") == "writing":
        return "interrupted"  # a batch task stopped between its two records
    if ours and record.get("status") == "finished" and out.is_file() \
            and same_params(record.get("params"), params):
        return "finished"
    return "foreign" if out.exists() else "missing"


def folder_output_state(folder: str | os.PathLike, record_name: str,
                        params: dict[str, Any]) -> OutputState:
    """The state of a folder output whose record ``folder/record_name`` holds ``"params"``."""
    root = Path(folder)
    if not root.exists():
        return "missing"
    record = read_json(root / record_name)
    if record is not None and same_params(record.get("params"), params):
        return "finished"
    return "foreign"


def write_sidecar(output: str | os.PathLike, *, action: str, params: dict[str, Any],
                  status: Literal["writing", "finished"], extra: dict[str, Any] | None = None
                  ) -> Path:
    """Write (atomically, replacing) the sidecar record of ``output``."""
    from .. import __version__
    from ..io._atomic import write_text_atomic

    record: dict[str, Any] = {
        "batch": True,
        "action": action,
        "status": status,
        "output": str(output),
        "params": params,
        "napari_shrec_version": __version__,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra or {})
    text = json.dumps(record, indent=2, default=json_default) + "\n"
    return write_text_atomic(sidecar_path(output), text, overwrite=True)


def file_stamp(path: str | os.PathLike) -> list[int]:
    """``[size in bytes, modification time in ns]`` of a file: an input's identity in a task's
    parameters, so that a changed input makes a finished output stale."""
    st = Path(path).stat()
    return [int(st.st_size), int(st.st_mtime_ns)]
