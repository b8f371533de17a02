"""JSON for napari-shrec's records (simulation.json, provenance files, benchmark results)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["json_default", "read_json_object"]


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy scalars and arrays as Python numbers and
    lists, paths as strings; anything else raises TypeError naming its type."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable (a torn write) or not an
    object."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
