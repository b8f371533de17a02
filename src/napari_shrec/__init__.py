"""napari-shrec: the SHREC'20 cryo-ET benchmark system — simulate, reconstruct, annotate, train,
detect and score — as a napari plugin, a Python library and a command-line tool.

The compute core (:mod:`napari_shrec.core`) and the file formats (:mod:`napari_shrec.io`) import
neither napari nor Qt; the napari side lives in ``layers.py``, ``_workers.py``, ``widgets/``,
``_reader.py`` and ``_writer.py``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-shrec")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
