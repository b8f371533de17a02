"""The Settings dock widget, and napari's Preferences page kept in step with ``settings.json``.

napari-shrec's settings (:mod:`napari_shrec.settings`: cache folder, default device, default
voxel size) live in ``settings.json``, which the CLI and the core read without napari. napari 0.9
also shows them on its own Preferences page (the manifest's ``configurations``), which napari
saves in its own file (``napari-shrec.yaml`` beside napari's settings). The two are reconciled
by :func:`sync_napari_preferences`: the more recently saved file wins, then every change made on
the Preferences page is written through to ``settings.json``. The Settings widget and the
sample data call it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..settings import (
    DEVICES,
    ENV_VARIABLES,
    Settings,
    env_overrides,
    load_settings,
    platform_cache_dir,
    save_settings,
    settings_from_dict,
    settings_path,
)
from ._common import float_spin, report_error

if TYPE_CHECKING:
    import napari

__all__ = ["SettingsWidget", "sync_napari_preferences"]

log = logging.getLogger(__name__)

PLUGIN_NAME = "napari-shrec"
_CONNECTED: list[Any] = []  # napari settings objects whose changes we write through
_PUSHING: list[bool] = [False]


def _napari_plugin_settings() -> Any | None:
    """napari's settings object of this plugin (``.general`` holds the values), or None when
    this napari has no plugin settings or does not know the plugin."""
    try:
        from napari.settings import get_plugin_settings

        return get_plugin_settings(PLUGIN_NAME)
    except Exception as exc:  # older napari, plugin not discovered, unreadable napari file
        log.debug("no napari Preferences page for %s: %s", PLUGIN_NAME, exc)
        return None


def _from_napari(general: Any) -> Settings:
    cache = str(general.cache_dir or "").strip()
    data = {"default_device": general.default_device,
            "default_voxel_size_nm": general.default_voxel_size_nm}
    if cache:
        data["cache_dir"] = cache
    return settings_from_dict(data, "napari Preferences ▸ SHREC cryo-ET")


def _push_to_napari(settings: Settings, general: Any) -> None:
    cache = "" if Path(settings.cache_dir) == platform_cache_dir() else str(settings.cache_dir)
    _PUSHING[0] = True
    try:
        for key, value in (("cache_dir", cache), ("default_device", settings.default_device),
                           ("default_voxel_size_nm", float(settings.default_voxel_size_nm))):
            if getattr(general, key) != value:
                setattr(general, key, value)
    finally:
        _PUSHING[0] = False


def _write_through(general: Any) -> None:
    if _PUSHING[0]:
        return
    try:
        save_settings(_from_napari(general))
    except (ValueError, OSError) as exc:
        from napari.utils.notifications import show_warning

        show_warning(f"napari-shrec settings not saved: {exc}")


def sync_napari_preferences() -> bool:
    """Reconcile napari's Preferences page with ``settings.json`` (the more recently saved file
    wins) and write later Preferences changes through to ``settings.json``.

    Returns:
        False where napari has no Preferences page for the plugin (nothing done), else True.
    """
    plugin = _napari_plugin_settings()
    if plugin is None:
        return False
    general = plugin.general
    ours = settings_path()
    theirs = Path(plugin.config_path) if isinstance(plugin.config_path, (str, Path)) else None
    napari_newer = theirs is not None and theirs.is_file() and (
        not ours.is_file() or theirs.stat().st_mtime > ours.stat().st_mtime)
    try:
        if napari_newer:
            save_settings(_from_napari(general))
        else:
            _push_to_napari(load_settings(env=False), general)
    except (ValueError, OSError) as exc:
        log.warning("napari-shrec settings and napari Preferences not reconciled: %s", exc)
    if not any(obj is general for obj in _CONNECTED):
        _CONNECTED.append(general)
        general.events.connect(lambda _event: _write_through(general))
    return True


class SettingsWidget(QWidget):
    """Edit ``settings.json``: cache folder, default device, default voxel size.

    Values overridden by an environment variable (``NAPARI_SHREC_CACHE_DIR`` …) are shown with a
    note: the file's value is saved, the variable still wins in this session.
    """

    def __init__(self, napari_viewer: napari.viewer.Viewer | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.path = settings_path()
        self.cache_edit = QLineEdit()
        self.cache_edit.setPlaceholderText(str(platform_cache_dir()))
        self.cache_edit.setToolTip("Downloads, structure maps, annotation autosaves, sample data "
                                   "and demo runs. Empty: the platform's user cache folder.")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_edit)
        cache_row.addWidget(browse)
        self.device_combo = QComboBox()
        self.device_combo.addItems(list(DEVICES))
        self.device_combo.setToolTip("auto: CUDA when PyTorch sees a GPU, else the CPU")
        self.voxel_spin = float_spin(0.01, 100.0, 1.0, 3, 0.1,
                                     "voxel edge assumed for volumes whose header has none",
                                     " nm")
        self.save_button = QPushButton("Save")
        self.save_button.clicked.connect(self.save)
        self.revert_button = QPushButton("Reload")
        self.revert_button.clicked.connect(self.reload)
        self.env_label = QLabel()
        self.env_label.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Cache folder", cache_row)
        form.addRow("Default device", self.device_combo)
        form.addRow("Default voxel size", self.voxel_spin)
        buttons = QHBoxLayout()
        buttons.addWidget(self.save_button)
        buttons.addWidget(self.revert_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(QLabel(f"File: {self.path}"))
        layout.addWidget(self.env_label)
        layout.addWidget(self.status)
        layout.addStretch(1)
        sync_napari_preferences()
        self.reload()

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Cache folder",
                                                  self.cache_edit.text() or str(Path.home()))
        if folder:
            self.cache_edit.setText(folder)

    def values(self) -> Settings:
        """The settings as the form shows them (validated)."""
        data: dict[str, Any] = {"default_device": self.device_combo.currentText(),
                                "default_voxel_size_nm": self.voxel_spin.value()}
        if self.cache_edit.text().strip():
            data["cache_dir"] = self.cache_edit.text().strip()
        return settings_from_dict(data, "the Settings widget")

    def reload(self) -> None:
        """Show the file's values (not the environment's)."""
        try:
            settings = load_settings(self.path, env=False)
        except ValueError as exc:
            report_error(self.status, "napari-shrec settings", exc)
            return
        cache = Path(settings.cache_dir)
        self.cache_edit.setText("" if cache == platform_cache_dir() else str(cache))
        self.device_combo.setCurrentText(settings.default_device)
        self.voxel_spin.setValue(settings.default_voxel_size_nm)
        overrides = env_overrides()
        self.env_label.setText(
            "Overridden in this session by " + ", ".join(
                f"${var} ({key})" for key, var in ENV_VARIABLES.items() if key in overrides)
            if overrides else "")
        self.status.setText("")

    def save(self) -> bool:
        """Validate and save the form to the settings file (and napari's Preferences)."""
        try:
            settings = self.values()
            save_settings(settings, self.path)
        except (ValueError, OSError) as exc:
            report_error(self.status, "napari-shrec settings", exc)
            return False
        plugin = _napari_plugin_settings()
        if plugin is not None:
            _push_to_napari(settings, plugin.general)
        self.status.setText(f"Saved to {self.path}")
        return True
