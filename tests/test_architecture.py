"""House rules that keep the compute core usable without a screen."""

import ast
import subprocess
import sys
from pathlib import Path

import napari_shrec

PACKAGE = Path(napari_shrec.__file__).parent
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "magicgui",
               "superqt")


def _imported_top_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_core_and_io_sources_never_import_napari_or_qt():
    offenders = []
    for folder in ("core", "io"):
        for path in sorted((PACKAGE / folder).rglob("*.py")):
            bad = _imported_top_modules(path) & set(GUI_MODULES)
            if bad:
                offenders.append(f"{path.relative_to(PACKAGE)}: {sorted(bad)}")
    assert not offenders, "GUI imports in the core: " + "; ".join(offenders)


def test_importing_core_io_and_cli_loads_no_gui_module():
    modules = sorted(
        "napari_shrec." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for folder in ("core", "io")
        for p in (PACKAGE / folder).rglob("*.py")
        if p.name != "__init__.py"
    ) + ["napari_shrec.cli", "napari_shrec.layers"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError as e:\n"
        "        if not e.name.startswith('napari_shrec'): raise\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {GUI_MODULES!r})\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"GUI modules loaded by the core: {out.stdout.strip()}"


def test_importing_the_napari_reader_module_stays_light():
    """napari imports ``_reader`` at its first reader query: no pandas, scipy or layer code
    until a reader actually runs."""
    code = (
        "import sys, napari_shrec._reader\n"
        "heavy = ('pandas', 'scipy', 'napari_shrec.layers', 'napari_shrec.core', 'starfile')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"_reader imports {out.stdout.strip()} at import time"
