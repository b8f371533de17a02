"""napari-shrec settings: defaults, the JSON file, environment overrides, errors, napari's page."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from napari_shrec.core.structure_sources import default_cache_dir
from napari_shrec.settings import (
    DEVICES,
    ENV_VARIABLES,
    Settings,
    default_settings,
    env_overrides,
    load_settings,
    platform_cache_dir,
    save_settings,
    settings_path,
)


@pytest.fixture
def settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private settings file path (not created) and no environment overrides."""
    path = tmp_path / "config" / "settings.json"
    monkeypatch.setenv("NAPARI_SHREC_SETTINGS", str(path))
    for var in ENV_VARIABLES.values():
        monkeypatch.delenv(var, raising=False)
    return path


def test_defaults_without_a_file(settings_file: Path) -> None:
    assert settings_path() == settings_file
    settings = load_settings()
    assert settings == default_settings()
    assert settings.cache_dir == platform_cache_dir()
    assert settings.cache_dir.name == "napari-shrec"
    assert (settings.default_device, settings.default_voxel_size_nm) == ("auto", 1.0)
    assert env_overrides() == {}
    assert default_cache_dir() == platform_cache_dir()


def test_round_trip_is_atomic_json(settings_file: Path, tmp_path: Path) -> None:
    wanted = Settings(cache_dir=tmp_path / "cache", default_device="cpu",
                      default_voxel_size_nm=1.35)
    assert save_settings(wanted) == settings_file
    assert json.loads(settings_file.read_text()) == {
        "cache_dir": str(tmp_path / "cache"), "default_device": "cpu",
        "default_voxel_size_nm": 1.35}
    assert load_settings() == wanted
    assert os.listdir(settings_file.parent) == ["settings.json"]  # no temporary left behind
    # the cache folder of every download, map, autosave and demo follows the file
    assert default_cache_dir() == tmp_path / "cache"
    # a partial file keeps the defaults for the keys it lacks
    settings_file.write_text('{"default_device": "cuda"}')
    assert load_settings() == Settings(cache_dir=platform_cache_dir(), default_device="cuda")


def test_environment_overrides_the_file(settings_file: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    save_settings(Settings(cache_dir=tmp_path / "a", default_device="cuda"))
    monkeypatch.setenv("NAPARI_SHREC_CACHE_DIR", str(tmp_path / "b"))
    monkeypatch.setenv("NAPARI_SHREC_DEVICE", "cpu")
    monkeypatch.setenv("NAPARI_SHREC_VOXEL_SIZE_NM", "0.5")
    assert load_settings() == Settings(cache_dir=tmp_path / "b", default_device="cpu",
                                       default_voxel_size_nm=0.5)
    assert load_settings(env=False).cache_dir == tmp_path / "a"
    assert set(env_overrides()) == {"cache_dir", "default_device", "default_voxel_size_nm"}
    assert default_cache_dir() == tmp_path / "b"
    monkeypatch.setenv("NAPARI_SHREC_DEVICE", "tpu")
    with pytest.raises(ValueError, match=r"\$NAPARI_SHREC_DEVICE.*default_device"):
        load_settings()


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", r"not valid JSON at line 1"),
    ("[1, 2]", r"must hold a JSON object"),
    ('{"cache_folder": "/x"}', r"unknown setting\(s\) 'cache_folder'"),
    ('{"default_device": "gpu"}', r"'default_device' must be one of auto, cpu, cuda"),
    ('{"default_voxel_size_nm": 0}', r"'default_voxel_size_nm' must be a number of nm > 0"),
    ('{"default_voxel_size_nm": true}', r"'default_voxel_size_nm'"),
    ('{"cache_dir": ""}', r"'cache_dir' must be a folder path"),
])
def test_a_bad_file_names_itself_and_the_key(settings_file: Path, content: str,
                                              message: str) -> None:
    settings_file.parent.mkdir(parents=True)
    settings_file.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_settings()
    assert str(settings_file) in str(info.value)


def test_saving_bad_values_writes_nothing(settings_file: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="default_device"):
        save_settings(Settings(cache_dir=tmp_path, default_device="gpu"))
    assert not settings_file.exists()


def test_the_manifest_offers_the_same_settings_to_napari() -> None:
    from npe2 import PluginManifest

    import napari_shrec

    manifest = PluginManifest.from_file(Path(napari_shrec.__file__).parent / "napari.yaml")
    properties = manifest.contributions.configurations["general"].properties
    assert set(properties) == set(ENV_VARIABLES)
    assert tuple(properties["default_device"].enum) == DEVICES
    assert properties["default_device"].default == "auto"
    assert properties["default_voxel_size_nm"].default == 1.0
    assert properties["cache_dir"].default == ""  # "" = the platform default


# ----------------------------------------------------------------- napari side (Qt widgets)


@pytest.fixture
def napari_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shrec_plugin):
    """napari's settings object for this plugin, saved in a private napari-shrec.yaml."""
    pytest.importorskip("napari")
    from napari.settings import plugin_configuration_generator

    from napari_shrec.widgets import settings as widget_module

    model = plugin_configuration_generator()["napari-shrec"]
    page = model(config_path=tmp_path / "napari" / "napari-shrec.yaml")
    monkeypatch.setattr(widget_module, "_napari_plugin_settings", lambda: page)
    return page


def test_widget_saves_the_file_and_napari_page(settings_file: Path, napari_page, qtbot,
                                               tmp_path: Path) -> None:
    from napari_shrec.widgets.settings import SettingsWidget

    widget = SettingsWidget()
    qtbot.addWidget(widget)
    assert widget.cache_edit.text() == ""  # the platform default
    assert widget.device_combo.currentText() == "auto"
    widget.cache_edit.setText(str(tmp_path / "big-disk"))
    widget.device_combo.setCurrentText("cpu")
    widget.voxel_spin.setValue(1.35)
    assert widget.save()
    assert load_settings() == Settings(cache_dir=tmp_path / "big-disk", default_device="cpu",
                                       default_voxel_size_nm=1.35)
    assert napari_page.general.default_device == "cpu"
    assert napari_page.general.cache_dir == str(tmp_path / "big-disk")
    # a change on napari's Preferences page is written through to settings.json
    napari_page.general.default_device = "cuda"
    assert load_settings().default_device == "cuda"
    napari_page.general.cache_dir = ""
    assert load_settings().cache_dir == platform_cache_dir()


def test_newer_napari_page_wins_when_reconciling(settings_file: Path, napari_page,
                                                 tmp_path: Path) -> None:
    from napari_shrec.widgets.settings import sync_napari_preferences

    save_settings(Settings(cache_dir=tmp_path / "old", default_device="cpu"))
    napari_page.general.default_voxel_size_nm = 0.8  # napari autosaves its yaml
    napari_page.save()
    yaml_file = Path(napari_page.config_path)
    old = settings_file.stat().st_mtime
    os.utime(yaml_file, (old + 10, old + 10))
    assert sync_napari_preferences()
    assert load_settings() == Settings(cache_dir=platform_cache_dir(), default_device="auto",
                                       default_voxel_size_nm=0.8)

    # a newer settings.json is pushed to the page instead
    save_settings(Settings(cache_dir=tmp_path / "new", default_device="cpu"))
    os.utime(settings_file, (old + 20, old + 20))
    assert sync_napari_preferences()
    assert napari_page.general.default_device == "cpu"
    assert napari_page.general.cache_dir == str(tmp_path / "new")
