"""Opening a napari viewer set up for napari-shrec (used by ``napari-shrec view``)."""

from __future__ import annotations

from typing import Any

PLUGIN_NAME = "napari-shrec"


def plugin_widget_names() -> list[str]:
    """Display names of the dock widgets napari-shrec contributes (from its npe2 manifest)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    if PLUGIN_NAME not in pm:
        pm.discover()
    manifest = pm.get_manifest(PLUGIN_NAME)
    widgets = manifest.contributions.widgets or []
    return [w.display_name for w in widgets]


def dock_plugin_widgets(viewer: Any) -> list[Any]:
    """Dock every napari-shrec widget in ``viewer``, tabbed on the right; returns the widgets."""
    docked = []
    for name in plugin_widget_names():
        dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, name, tabify=True)
        docked.append(widget)
    return docked
