"""Pure computation: numpy/scipy (and later torch). Imports neither napari nor Qt."""

from .classes import (
    SHREC20_RELEASED_MASK_IDS,
    SHREC20_TABLE,
    SHREC21_RELEASED_MASK_IDS,
    SHREC21_TABLE,
    ClassTable,
    ParticleClass,
)
from .particles import ParticleList
from .progress import CancelToken, Cancelled, ProgressReporter
from .volume import Volume

__all__ = [
    "ClassTable",
    "ParticleClass",
    "SHREC20_TABLE",
    "SHREC21_TABLE",
    "SHREC20_RELEASED_MASK_IDS",
    "SHREC21_RELEASED_MASK_IDS",
    "ParticleList",
    "Volume",
    "CancelToken",
    "Cancelled",
    "ProgressReporter",
]
