"""Regenerate docs/images/annotate-widget.png: a simulated tomogram annotated with a dozen points
of several classes (class colours, class-mask overlay) and the Annotate widget docked.

Make the dataset first (SNR 0.1 instead of the default 0.004, so that particles can be seen in
a 128-voxel-wide picture), then run this under a display::

    napari-shrec simulate --preset small --out /tmp/annot_demo --seed 2 --snr 0.1 \\
        --structures ../shared/structures/pdb --structures ../shared/structures/polnet_maps_10A \\
        --no-download
    QT_QPA_PLATFORM=xcb xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_annotate_widget.py /tmp/annot_demo \\
        docs/images/annotate-widget.png

The points are the dataset's ground-truth particles within 6 slices of slice 35, added through
the layer API with the widget's class set first (as number keys would), so each lands in its
class colour; the view uses a thick slice (13 slices) so that points near the slice are drawn as
the cross-sections of their spheres. Autosaves go to a temporary folder, not the user cache.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_shrec.io.dataset import load_dataset

SLICE = 35
HALF_THICKNESS = 6


def _settle(n: int = 30) -> None:
    for _ in range(n):
        QApplication.processEvents()


def main(folder: str, image_path: str) -> None:
    ds = load_dataset(folder)
    vs = float(ds.voxel_size_nm)
    viewer = napari.Viewer(title="napari-shrec")
    viewer.window.resize(1600, 1000)
    viewer.open(str(Path(folder) / "reconstruction.mrc"), plugin="napari-shrec")
    tomo = viewer.layers["reconstruction"]
    _, widget = viewer.window.add_plugin_dock_widget("napari-shrec", "Annotate")
    widget.autosave_directory = tempfile.mkdtemp(prefix="annotate-screenshot-")
    widget.autosave_delay_ms = 10

    # the class mask under the points, in the same class colours
    widget.show_overlay("class_mask", True).opacity = 0.3

    layer = widget.new_annotation_layer()
    table = ds.particles.table
    near = table[(table["z"] - SLICE).abs() <= HALF_THICKNESS].sort_values("class_name")
    for row in near.itertuples():
        widget.set_class(str(row.class_name))  # what the number keys do
        layer.add([float(row.z) + ds.grandmodel_z_offset, float(row.y), float(row.x)])
    widget.set_class("1bxn")
    widget.snap_check.setChecked(True)
    layer.selected_data = set()

    tomo.contrast_limits = tuple(np.percentile(np.asarray(tomo.data[SLICE]), (1.0, 99.5)))
    viewer.dims.set_point(0, SLICE * vs)
    viewer.dims.thickness = (2 * HALF_THICKNESS + 1) * vs, vs, vs
    viewer.layers.selection.active = layer
    layer.mode = "add"
    widget.flush_autosave()
    _settle()
    viewer.reset_view()  # once the dock has its width
    widget.status.setText(f"Added {len(layer.data)} points of {near['class_name'].nunique()} "
                          f"classes; next point: 1bxn (key 9)")
    _settle()
    viewer.window._qt_window.grab().save(image_path)
    print(f"wrote {image_path}: {len(layer.data)} points, classes "
          f"{', '.join(sorted(near['class_name'].unique()))}")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
