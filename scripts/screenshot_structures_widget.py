"""Regenerate docs/images/structures-widget.png: napari with the Structures widget after building
all 12 SHREC'20 maps from the shared test structures, previewing 1bxn as a 3D iso-surface.

Run under a display, e.g.::

    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        python scripts/screenshot_structures_widget.py ../shared/structures \\
        docs/images/structures-widget.png

STRUCTURES is a folder with ``pdb/`` (atomic models) and ``polnet_maps_10A/`` (maps). Downloads
are off and the cache is a fresh temporary folder, so classes without a local file (4d8q) show
as surrogates. The build runs synchronously (as in ``screenshot_score_widget.py``), so the
status line shows the final message. An existing image is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def _settle(app, rounds: int = 30) -> None:
    for _ in range(rounds):
        app.processEvents()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("structures", help="folder holding pdb/ and polnet_maps_10A/")
    parser.add_argument("image", help="output PNG")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing image")
    parser.add_argument("--angles", type=float, nargs=3, default=(30.0, 40.0, 120.0),
                        metavar=("A0", "A1", "A2"),
                        help="3D camera angles in degrees (default 30 40 120)")
    parser.add_argument("--zoom", type=float, default=1.2,
                        help="camera zoom relative to napari's reset view (default 1.2)")
    args = parser.parse_args(argv)

    structures = Path(args.structures)
    sources = [structures / "pdb", structures / "polnet_maps_10A"]
    for source in sources:
        if not source.is_dir():
            parser.error(f"not a folder: {source}")
    image = Path(args.image)
    if image.exists() and not args.overwrite:
        parser.error(f"{image} exists (pass --overwrite to replace it)")
    image.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="napari-shrec-cache-") as cache:
        # before the widget (and anything that reads the default cache dir) is made
        os.environ["NAPARI_SHREC_CACHE_DIR"] = cache

        import napari
        from qtpy.QtCore import Qt
        from qtpy.QtWidgets import QApplication

        from napari_shrec._workers import set_threading
        from napari_shrec.widgets.structures import StructuresWidget

        set_threading(False)
        viewer = napari.Viewer(title="napari-shrec")
        app = QApplication.instance()
        qt_window = viewer.window._qt_window
        qt_window.resize(1600, 1000)
        widget = StructuresWidget(viewer)
        dock = viewer.window.add_dock_widget(widget, name="Structures", area="right")
        widget.download_check.setChecked(False)
        for source in sources:
            widget.add_source(source)
        _settle(app)

        widget.start_build()  # every class is ticked; returns when built (no threads)
        if len(widget.maps) != 12:
            print(f"only {len(widget.maps)} maps built: {widget.status.status.text()}",
                  file=sys.stderr)
            viewer.close()
            return 1
        widget.table.resizeColumnsToContents()
        widget.table.selectRow(widget.row_of("1bxn"))  # previews it, too
        if widget._preview_layer is None:
            widget.preview("1bxn")
        widget.set_3d(True)
        _settle(app)

        # a dock wide enough for every table column, the canvas taking the rest
        table = widget.table
        table_width = (table.horizontalHeader().length() + table.frameWidth() * 2
                       + table.verticalScrollBar().sizeHint().width() + 40)
        qt_window.resizeDocks([dock], [table_width], Qt.Orientation.Horizontal)
        _settle(app)

        viewer.reset_view()
        camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
        camera.angles = tuple(args.angles)
        camera.zoom *= args.zoom
        _close_notifications(qt_window)  # the status line says the same (surrogate 4d8q)
        _settle(app, 60)

        tmp = image.with_name(f".{image.stem}.tmp{os.getpid()}.png")
        try:
            if not qt_window.grab().save(str(tmp)):
                raise OSError(f"could not write {tmp}")
            if image.exists() and not args.overwrite:  # appeared meanwhile
                raise FileExistsError(f"{image} exists (pass --overwrite to replace it)")
            os.replace(tmp, image)
        finally:
            if tmp.exists():
                tmp.unlink()
        print(f"wrote {image}: {widget.status.status.text()}")
        viewer.close()
    return 0


def _close_notifications(qt_window) -> None:
    """Close napari's notification pop-ups, which would cover part of the canvas."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:
        return
    for popup in qt_window.findChildren(NapariQtNotification):
        popup.close()


if __name__ == "__main__":
    sys.exit(main())
