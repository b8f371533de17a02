"""Shared fixtures. Widget tests run offscreen unless they need a real GL canvas (Xvfb)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED = Path(__file__).resolve().parents[2] / "shared"
STRUCTURES = SHARED / "structures"


@pytest.fixture
def structures_dir() -> Path:
    """../shared/structures (PDB models and maps); skips the test where it is absent."""
    if not STRUCTURES.is_dir():
        pytest.skip(f"test structures not found at {STRUCTURES} (../shared is not beside the repo)")
    return STRUCTURES


@pytest.fixture
def shrec_plugin() -> None:
    """Make sure npe2 knows napari-shrec's manifest (entry points are read on discovery)."""
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    if "napari-shrec" not in pm:
        pm.discover(include_npe1=False)
    assert "napari-shrec" in pm, "napari-shrec is not installed (pip install -e .)"


@pytest.fixture(autouse=True, scope="session")
def _private_structure_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Downloads and computed structure maps go to a per-session folder, never the user's
    cache, and no test reaches the real RCSB."""
    os.environ["NAPARI_SHREC_CACHE_DIR"] = str(tmp_path_factory.mktemp("structure-cache"))
    # and no test reads or writes the developer's own napari-shrec settings file
    os.environ["NAPARI_SHREC_SETTINGS"] = str(tmp_path_factory.mktemp("settings") / "settings.json")
    os.environ["NAPARI_SHREC_PDB_URL"] = "http://127.0.0.1:9/{pdb_id}.cif"  # discard port: refused
