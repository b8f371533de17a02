"""Small pieces every dock widget uses: spin boxes with units, error reporting, layers by name,
asking before a file is replaced."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from pathlib import Path

import numpy as np
from qtpy.QtWidgets import QDoubleSpinBox, QLabel, QMessageBox, QSpinBox, QWidget

if TYPE_CHECKING:
    import napari

__all__ = ["int_spin", "float_spin", "report_error", "show_layer", "confirm_replace",
           "warm_up_labels_colormap"]

log = logging.getLogger(__name__)


def int_spin(low: int, high: int, value: int, tip: str, suffix: str = "") -> QSpinBox:
    """An integer spin box with a range, a value, a tooltip and an optional unit suffix."""
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def float_spin(low: float, high: float, value: float, decimals: int, step: float, tip: str,
               suffix: str = "") -> QDoubleSpinBox:
    """A float spin box with a range, precision, step, value, tooltip and optional unit suffix."""
    spin = QDoubleSpinBox()
    spin.setRange(low, high)
    spin.setDecimals(decimals)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setToolTip(tip)
    if suffix:
        spin.setSuffix(suffix)
    return spin


def report_error(status: QLabel, title: str, exc: BaseException) -> str:
    """Show an error as "Failed: …" in a status label and as a napari notification
    "<title>: …" (logged when no notification manager exists). Returns the message."""
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    if not message:
        message = type(exc).__name__
    status.setText(f"Failed: {message}")
    try:
        from napari.utils.notifications import show_error

        show_error(f"{title}: {message}")
    except Exception:  # no napari notification manager (bare scripts)
        log.error("%s: %s", title, message)
    return message


def show_layer(viewer: napari.viewer.Viewer | Any, layer_data: tuple[Any, dict, str], *,
               new_index: int | None = None) -> Any:
    """Add a layer from napari layer data, or replace the layer of the same name in place
    (same position, keeping the visibility the user chose). A new layer goes to ``new_index``
    (default: the top)."""
    from napari.layers import Layer

    data, kwargs, kind = layer_data
    kwargs = dict(kwargs)
    layers = viewer.layers
    name = kwargs["name"]
    old = layers[name] if name in layers else None
    if old is not None:
        kwargs["visible"] = bool(old.visible)
    layer = Layer.create(data, kwargs, kind)
    if old is not None:
        index = layers.index(old)
        layers.remove(old)
        layers.insert(index, layer)
    elif new_index is not None:
        layers.insert(new_index, layer)
    else:
        layers.append(layer)
    return layer


def confirm_replace(parent: QWidget, target: Path) -> bool:
    """True when ``target`` does not exist, or when the user agrees to replace it."""
    if not target.exists():
        return True
    answer = QMessageBox.question(
        parent, "Replace the file?", f"{target} already exists.\n\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


def warm_up_labels_colormap(layer_data: tuple[Any, dict, str]) -> None:
    """Compile, in the calling (worker) thread, what napari compiles the first time it draws a
    Labels layer with a direct (class) colormap: numba's typed dict and the label → texture
    loop for the layer's dtype. Done in the GUI thread, this first draw froze the viewer for
    2–4 s after a simulation (benchmarks/bench_responsiveness.py); compiled here, it does not.
    Any problem is logged and ignored (the layer is then drawn as before)."""
    data, kwargs, kind = layer_data
    colormap = kwargs.get("colormap")
    if kind != "labels" or not isinstance(colormap, dict):
        return
    try:
        from napari.utils.colormaps import DirectLabelColormap

        dtype = np.asarray(data[:1, :1, :1] if np.ndim(data) >= 3 else data).dtype
        cmap = DirectLabelColormap(color_dict=colormap)
        cmap._map_without_cache(np.arange(2, dtype=dtype))  # napari's private first-use path
    except Exception:  # noqa: BLE001 - an optimisation only
        log.debug("could not warm up napari's labels colormap", exc_info=True)
