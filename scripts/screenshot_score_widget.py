"""Regenerate docs/images/score-widget.png: napari with a quick-start dataset, picks and the
Score widget after scoring (run under a display, e.g. `xvfb-run -a python scripts/...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from napari_shrec._workers import set_threading


def main(out_dir: str, image_path: str) -> None:
    set_threading(False)
    viewer = napari.Viewer(title="napari-shrec")
    viewer.window.resize(1500, 950)
    viewer.open(str(Path(out_dir) / "dataset"), plugin="napari-shrec")
    viewer.open(str(Path(out_dir) / "picks.txt"), plugin="napari-shrec")
    _, widget = viewer.window.add_plugin_dock_widget("napari-shrec", "Score")
    widget.set_predictions(["picks"])
    widget.start_scoring()
    widget.color_by.setCurrentText("outcome")
    for layer in viewer.layers:
        if "grandmodel" in layer.name or "class mask" in layer.name:
            layer.visible = True
    viewer.dims.set_point(0, 48)
    for _ in range(20):
        QApplication.processEvents()
    viewer.window._qt_window.grab().save(image_path)
    widget.tabs.setCurrentIndex(1)
    for _ in range(20):
        QApplication.processEvents()
    viewer.window._qt_window.grab().save(image_path.replace(".png", "-confusion.png"))
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
