"""`napari-shrec view` in a real napari.Viewer on the Xvfb display (a subprocess, since the test
session itself runs Qt offscreen)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from napari_shrec.core.phantom import sphere_phantom
from napari_shrec.io.dataset import write_dataset
from napari_shrec.io.particles import write_particles

pytestmark = pytest.mark.napari

_SCRIPT = textwrap.dedent(
    """
    import sys
    import napari
    from napari_shrec.cli import main

    napari.run = lambda *a, **k: None  # return at once instead of entering the event loop
    code = main(["view", *sys.argv[1:]])
    viewer = napari.current_viewer()
    try:
        docks = sorted(viewer.window.dock_widgets)
        print("CODE", code)
        print("LAYERS", "|".join(layer.name for layer in viewer.layers))
        print("DOCKS", "|".join(docks))
    finally:
        viewer.close()
    """
)


def test_view_opens_paths_with_the_widgets_docked(tmp_path, shrec_plugin):
    display = os.environ.get("DISPLAY")
    if not display:
        pytest.skip("no X display (pytest-xvfb not active)")
    pytest.importorskip("napari")
    phantom = sphere_phantom((16, 32, 32), 4, seed=2)
    folder = write_dataset(tmp_path / "ds", particles=phantom.particles,
                           volumes={"occupancy_mask": phantom.occupancy_mask,
                                    "grandmodel": phantom.density})
    picks = write_particles(tmp_path / "picks.txt", phantom.particles)
    script = tmp_path / "view.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb", "DISPLAY": display}
    proc = subprocess.run([sys.executable, str(script), str(folder), str(picks)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines()
                 if line.split(" ", 1)[0] in ("CODE", "LAYERS", "DOCKS"))
    assert lines["CODE"] == "0"
    layers = lines["LAYERS"].split("|")
    assert layers == ["ds grandmodel", "ds occupancy mask", "ds ground truth", "picks"]
    assert any("Score" in dock for dock in lines["DOCKS"].split("|")), lines["DOCKS"]


def test_npe2_manifest_validates_with_imports():
    proc = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-shrec", "--imports"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "valid" in proc.stdout, proc.stdout + proc.stderr
