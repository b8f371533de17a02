"""napari-shrec's own settings: cache directory, default device, default voxel size.

The settings live in one JSON file, ``settings.json`` in the user configuration directory
(``platformdirs.user_config_dir("napari-shrec")``, e.g. ``~/.config/napari-shrec/settings.json``;
``$NAPARI_SHREC_SETTINGS`` names another file)::

    {
      "cache_dir": "/data/napari-shrec-cache",
      "default_device": "auto",
      "default_voxel_size_nm": 1.0
    }

Every key is optional; a missing key takes its default. Environment variables override the file
for one session:

==============================  ==========================  =====================================
variable                        key                         default
==============================  ==========================  =====================================
``NAPARI_SHREC_CACHE_DIR``      ``cache_dir``               the user cache directory
                                                            (``platformdirs.user_cache_dir``)
``NAPARI_SHREC_DEVICE``         ``default_device``          ``"auto"`` (CUDA when PyTorch sees a
                                                            GPU, else the CPU)
``NAPARI_SHREC_VOXEL_SIZE_NM``  ``default_voxel_size_nm``   1.0 (nm; SHREC'20's voxel edge)
==============================  ==========================  =====================================

This module imports neither napari nor Qt: the CLI, the core and the widgets all read the same
settings with :func:`load_settings`. Inside napari, the Settings widget and the napari-shrec
page of napari's Preferences edit them (``widgets/settings.py`` keeps the two in step).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "APP_NAME",
    "DEVICES",
    "SETTINGS_FILE_ENV",
    "CACHE_DIR_ENV",
    "DEVICE_ENV",
    "VOXEL_SIZE_ENV",
    "ENV_VARIABLES",
    "Settings",
    "default_settings",
    "platform_cache_dir",
    "settings_path",
    "env_overrides",
    "settings_from_dict",
    "load_settings",
    "save_settings",
]

APP_NAME = "napari-shrec"
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
"""Allowed ``default_device`` values: "auto" (CUDA when PyTorch sees a GPU, else CPU)."""

SETTINGS_FILE_ENV = "NAPARI_SHREC_SETTINGS"
CACHE_DIR_ENV = "NAPARI_SHREC_CACHE_DIR"
DEVICE_ENV = "NAPARI_SHREC_DEVICE"
VOXEL_SIZE_ENV = "NAPARI_SHREC_VOXEL_SIZE_NM"
ENV_VARIABLES: dict[str, str] = {
    "cache_dir": CACHE_DIR_ENV,
    "default_device": DEVICE_ENV,
    "default_voxel_size_nm": VOXEL_SIZE_ENV,
}
"""Settings key → the environment variable that overrides it."""


@dataclass(frozen=True)
class Settings:
    """napari-shrec's settings.

    Attributes:
        cache_dir: where downloads, computed structure maps, annotation autosaves, the sample
            data and demo runs go.
        default_device: "auto", "cpu" or "cuda": the device actions use unless told otherwise.
        default_voxel_size_nm: voxel edge (nm) assumed for volumes whose header has none.
    """

    cache_dir: Path
    default_device: str = "auto"
    default_voxel_size_nm: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``cache_dir`` as a string)."""
        return {"cache_dir": str(self.cache_dir), "default_device": self.default_device,
                "default_voxel_size_nm": float(self.default_voxel_size_nm)}


def platform_cache_dir() -> Path:
    """The platform's user cache directory of napari-shrec (e.g. ``~/.cache/napari-shrec``)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def default_settings() -> Settings:
    """The settings with no file and no environment variable."""
    return Settings(cache_dir=platform_cache_dir())


def settings_path() -> Path:
    """The settings file: ``$NAPARI_SHREC_SETTINGS``, else ``settings.json`` in the user
    configuration directory of napari-shrec."""
    env = os.environ.get(SETTINGS_FILE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME)) / "settings.json"


def env_overrides() -> dict[str, str]:
    """Settings keys currently overridden by an environment variable → that variable's name."""
    return {key: var for key, var in ENV_VARIABLES.items() if os.environ.get(var)}


def settings_from_dict(data: Mapping[str, Any], source: str,
                       base: Settings | None = None) -> Settings:
    """Validated settings from ``data`` (keys missing from it keep ``base``'s values, by default
    :func:`default_settings`).

    Raises:
        ValueError: an unknown key or a bad value; the message names the key and ``source``
            (the file or environment variable the value came from).
    """
    base = base if base is not None else default_settings()
    unknown = sorted(set(data) - set(ENV_VARIABLES))
    if unknown:
        raise ValueError(f"{source}: unknown setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(ENV_VARIABLES)}")
    changes: dict[str, Any] = {}
    if "cache_dir" in data:
        value = data["cache_dir"]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{source}: 'cache_dir' must be a folder path (a non-empty "
                             f"string), not {value!r}")
        changes["cache_dir"] = Path(value.strip()).expanduser()
    if "default_device" in data:
        value = data["default_device"]
        if value not in DEVICES:
            raise ValueError(f"{source}: 'default_device' must be one of "
                             f"{', '.join(DEVICES)}, not {value!r}")
        changes["default_device"] = str(value)
    if "default_voxel_size_nm" in data:
        value = data["default_voxel_size_nm"]
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value <= 0:
            raise ValueError(f"{source}: 'default_voxel_size_nm' must be a number of nm > 0, "
                             f"not {value!r}")
        changes["default_voxel_size_nm"] = float(value)
    return replace(base, **changes)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the napari-shrec settings file ({exc})") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno} "
                         f"({exc.msg}); fix or delete the napari-shrec settings file") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the napari-shrec settings file must hold a JSON object "
                         "({\"key\": value, …})")
    return data


def load_settings(path: str | os.PathLike | None = None, *, env: bool = True) -> Settings:
    """The settings: defaults, then the settings file, then (``env``) environment variables.

    Args:
        path: the settings file (default :func:`settings_path`); a missing file means defaults.
        env: apply the ``NAPARI_SHREC_*`` environment overrides (False: the file's own values,
            e.g. for an editor that saves them back).

    Raises:
        ValueError: the file is not JSON, holds an unknown key or a bad value, or an environment
            variable holds a bad value; the message names the file (or variable) and the key.
    """
    file = Path(path) if path is not None else settings_path()
    settings = settings_from_dict(_read_file(file), str(file))
    if env:
        for key, var in ENV_VARIABLES.items():
            value = os.environ.get(var)
            if value:
                settings = settings_from_dict({key: value}, f"${var}", base=settings)
    return settings


def settings_or_defaults() -> Settings:
    """:func:`load_settings`, or the defaults (with a logged warning naming the problem) when
    the settings file or an environment variable is bad: a widget still opens, with defaults."""
    try:
        return load_settings()
    except ValueError as exc:
        import logging

        logging.getLogger("napari_shrec").warning("napari-shrec settings ignored: %s", exc)
        return default_settings()


def save_settings(settings: Settings, path: str | os.PathLike | None = None) -> Path:
    """Write ``settings`` to the settings file (default :func:`settings_path`), atomically
    (a temporary file renamed over the old one); returns the path.

    Raises:
        ValueError: a value is invalid (nothing written).
    """
    from .io._atomic import write_text_atomic

    file = Path(path) if path is not None else settings_path()
    checked = settings_from_dict(settings.to_dict(), "settings to save")
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(checked.to_dict(), indent=2) + "\n"
    return write_text_atomic(file, text, overwrite=True)
