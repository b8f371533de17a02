"""Pure computation: numpy/scipy (and later torch). Imports neither napari nor Qt.

Modules: ``classes`` (the class table), ``particles`` (ParticleList), ``rotations`` (Euler
conventions), ``volume`` (Volume), ``progress`` (callbacks and cancellation), ``phantom``,
``score`` and ``score_report``. Import from the module that holds a name
(``from napari_shrec.core.particles import ParticleList``): this package re-exports nothing, so
that napari's plugin discovery, which imports ``core.classes``, does not pay for pandas and scipy.
"""
