"""Regenerate the screenshots of the user guide: every napari-shrec widget in use in a real napari
window, on a small simulated dataset.

Run from the repository root under a display (Xvfb), e.g.::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshots.py [--out docs/images] [--structures DIR ...]
        [--work DIR] [--only simulate,detect]

It simulates the ``small`` preset (SNR 0.002, image ratio 0.15, so that particles can be seen
at this size; the structure files from ``--structures`` — default
``../shared/structures/{pdb,polnet_maps_10A}`` where present — else surrogate shapes), then
drives each widget as a user would (the inputs are
the layers the widget before added) and saves, in ``--out``:

- ``simulate.png``, ``reconstruct.png``, ``structures.png``, ``annotate.png``, ``train.png``,
  ``detect.png``, ``score.png``: the window with that widget's tab in front, after its run;
- ``napari-shrec.png``: the plugin in use (reconstruction, class mask, detected particles
  coloured by their score outcome, the Score widget docked).

The window is 1440 × 900 logical pixels; PNGs are reduced to 256 colours (Pillow), so that each
stays under 300 kB. Autosaves, caches and the dataset go to a temporary folder (``--work``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_STRUCTURES = REPO.parent / "shared" / "structures"
WINDOW = (1440, 900)
DOCK_WIDTH = 470
SLICE = 32
MAX_BYTES = 300_000


def settle(seconds: float = 0.3) -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)


def wait(widget, timeout_s: float = 900.0) -> None:
    """Wait for a widget's worker; stop the script if the run did not succeed."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + timeout_s
    while widget.runner.busy and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.01)
    text = widget.status.status.text()
    if widget.runner.busy or text.startswith(("Failed", "Cancelled")):
        raise SystemExit(f"{type(widget).__name__}: {text or 'timed out'}")
    print(f"  {type(widget).__name__}: {text[:160]}")


def close_notifications(window) -> None:
    """Close napari's notification toasts (they would cover the canvas)."""
    from qtpy.QtWidgets import QWidget

    for child in window.findChildren(QWidget):
        if type(child).__name__ == "NapariQtNotification":
            child.close()
    settle(0.3)


def save_png(window, path: Path) -> None:
    """Grab the window and write it as a 256-colour PNG."""
    from PIL import Image

    settle(0.5)
    raw = path.with_suffix(".raw.png")
    window.grab().save(str(raw))
    image = Image.open(raw).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    raw.unlink()
    size = path.stat().st_size
    print(f"wrote {path} ({size // 1000} kB)" + ("  ** over 300 kB **" if size > MAX_BYTES
                                                  else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    parser.add_argument("--structures", type=Path, action="append", default=None,
                        help="structure folders (default: ../shared/structures/pdb and "
                             "polnet_maps_10A where present, else surrogate shapes)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the dataset, checkpoints and caches (default: temporary)")
    parser.add_argument("--only", default="", help="comma-separated widget names to save")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="napari-shrec-screenshots-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NAPARI_SHREC_CACHE_DIR", str(work / "cache"))
    sources = args.structures
    if sources is None:
        sources = [p for p in (SHARED_STRUCTURES / "pdb", SHARED_STRUCTURES / "polnet_maps_10A")
                   if p.is_dir()]
    only = {name.strip() for name in args.only.split(",") if name.strip()}
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.out, work, sources, only)
    return 0


def run(out: Path, work: Path, sources: list[Path], only: set[str]) -> None:
    import napari
    import numpy as np

    from napari_shrec._viewer import PLUGIN_NAME, plugin_widget_names

    viewer = napari.Viewer(title="napari-shrec")
    window = viewer.window._qt_window
    window.resize(*WINDOW)
    docks, widgets = {}, {}
    for name in plugin_widget_names():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, name, tabify=True)
        dock.setMinimumWidth(DOCK_WIDTH)
        docks[name], widgets[name] = dock, widget
    settle(1.0)

    def shoot(name: str, file_name: str | None = None) -> None:
        if only and name.lower() not in only:
            return
        docks[name].show()
        docks[name].raise_()
        close_notifications(window)
        save_png(window, out / (file_name or f"{name.lower()}.png"))

    def show_slice() -> None:
        viewer.dims.ndisplay = 2
        vs = float(viewer.layers["reconstruction"].scale[0])
        viewer.dims.set_point(0, SLICE * vs)
        viewer.reset_view()

    # --- Simulate
    sim = widgets["Simulate"]
    folder = work / "sim"
    sim.apply_preset("small")
    sim.set_sources(sources)
    sim.download_check.setChecked(False)
    sim.seed_spin.setValue(2)
    sim.snr_spin.setValue(0.002)
    sim.folder_edit.setText(str(folder))
    print(f"simulating into {folder} (structures: {', '.join(map(str, sources)) or 'surrogates'})")
    if not sim.simulate_into(folder, overwrite=True):
        raise SystemExit(sim.status.status.text())
    wait(sim)
    for name in ("projections", "grandmodel"):
        viewer.layers[name].visible = False
    viewer.layers["class mask"].visible = True
    viewer.layers["class mask"].opacity = 0.35
    recon = viewer.layers["reconstruction"]
    recon.contrast_limits = tuple(np.percentile(np.asarray(recon.data[SLICE]), (1.0, 99.5)))
    show_slice()
    shoot("Simulate")

    # --- Reconstruct (the dataset is filled in from the layers)
    rec = widgets["Reconstruct"]
    rec.device_combo.setCurrentText("cpu")
    rec.weighting_combo.setCurrentText("sirt")
    rec.start_reconstruction()
    wait(rec)
    recon = viewer.layers["reconstruction"]
    recon.contrast_limits = tuple(np.percentile(np.asarray(recon.data[SLICE]), (1.0, 99.5)))
    shoot("Reconstruct")

    # --- Structures: the maps the simulation built come from the cache
    st = widgets["Structures"]
    st.set_sources(sources)
    st.download_check.setChecked(False)
    st.start_build()
    wait(st)
    shown = [layer for layer in viewer.layers if layer.visible]
    for layer in shown:
        layer.visible = False
    st.preview("1bxn")
    st.set_3d(True)
    viewer.reset_view()
    shoot("Structures")
    st.set_3d(False)
    st._remove_previews(keep=None)
    for layer in shown:
        layer.visible = True
    show_slice()

    # --- Annotate: a dozen points on the displayed slice, with the class keys' effect
    ann = widgets["Annotate"]
    ann.autosave_directory = str(work / "autosave")
    layer = ann.new_annotation_layer()
    from napari_shrec.io.dataset import load_dataset

    table = load_dataset(folder).particles.table
    near = table[(table["z"] - SLICE).abs() <= 6].sort_values("class_name")
    for row in near.itertuples():
        ann.set_class(str(row.class_name))
        layer.add([float(row.z), float(row.y), float(row.x)])
    viewer.dims.thickness = (13.0, 1.0, 1.0)
    viewer.layers.selection.active = layer
    layer.mode = "add"
    shoot("Annotate")
    layer.mode = "pan_zoom"
    layer.visible = False

    # --- Train: two short epochs on the simulated dataset, validated on it
    tr = widgets["Train"]
    if not tr.training_folders():
        tr.add_training_folder(folder)
    tr.add_validation_folder(folder)
    tr.set_output(work / "demo_unet.pt")
    tr.epochs_spin.setValue(3)
    tr.steps_spin.setValue(4)
    tr.patch_spin.setValue(32)
    tr.device_combo.setCurrentText("cpu")
    tr.start_training()
    wait(tr)
    shoot("Train")

    # --- Detect: the shipped model on the reconstruction layer
    det = widgets["Detect"]
    det.model_combo.setCurrentIndex(0)  # shipped model (Train offered its checkpoint)
    det.layer_combo.setCurrentText("reconstruction")
    det.device_combo.setCurrentText("cpu")
    det.start_detection()
    wait(det)
    shoot("Detect")

    # --- Score: dataset folder and the predictions layer are taken from the layers
    sco = widgets["Score"]
    sco.set_predictions([det.last_layer.name])
    sco.start_scoring()
    wait(sco)
    sco.color_by.setCurrentText("outcome")
    shoot("Score")

    # --- the plugin in use
    viewer.layers.selection.active = det.last_layer
    shoot("Score", "napari-shrec.png")
    viewer.close()


if __name__ == "__main__":
    sys.exit(main())
