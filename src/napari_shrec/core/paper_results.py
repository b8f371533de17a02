"""The SHREC'20 paper's published results (Gubins et al. 2020), as data: the rows our own results
are shown next to (``scripts/reproduce_shrec20.py``, ``napari-shrec demo``, docs/results.md).

All figures are copied from the paper's tables for the test tomogram ``model_9`` (2782
particles): Table 3 (localization), Table 4 (classification F1 per class), Table 6 (F1 per size
group) and Table 7 (timings as reported by the participants). The appendix's Table 8 (template
matching on the 2019 and 2020 data with another protocol) is :data:`TABLE8_TM_LOCALIZATION_F1`
and :data:`TABLE8_TM_CLASS_F1`.

Class order everywhere: :data:`CLASSES`, by molecular weight (the paper's Table 4 order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

__all__ = [
    "CLASSES",
    "METHODS",
    "TABLE3_LOCALIZATION",
    "TABLE4_CLASS_F1",
    "TABLE6_SIZE_GROUP_F1",
    "TABLE7_TIMINGS",
    "TABLE8_TM_LOCALIZATION_F1",
    "TABLE8_TM_CLASS_F1",
    "TEST_PARTICLES",
    "class_f1_row",
    "rank_correlation",
]

#: the 12 SHREC'20 classes by molecular weight (Table 4's column order)
CLASSES: tuple[str, ...] = ("1s3x", "3qm1", "3gl1", "3h84", "2cg9", "3d2f", "1u6g", "3cf3",
                            "1bxn", "1qvr", "4cr2", "4d8q")
#: the methods of the paper's tables, in its order
METHODS: tuple[str, ...] = ("3D MS-D", "DeepFinder", "3D ResNet", "YOPO", "Dn3DUnet", "UMC",
                            "TM-T", "TM-F")
#: particles in the paper's test tomogram model_9
TEST_PARTICLES = 2782

_LOC_COLUMNS = ("RR", "TP", "FP", "FN", "MH", "RO", "AD", "recall", "precision", "miss_rate",
                "f1")
_LOC_ROWS = {
    # RR    TP    FP   FN   MH   RO  AD     recall precision miss   F1
    "3D MS-D": (2663, 2523, 139, 259, None, 0, 2.05, 0.906, 0.947, 0.094, 0.926),
    "DeepFinder": (2594, 2485, 107, 297, 2, 0, 2.166, 0.893, 0.957, 0.107, 0.924),
    "3D ResNet": (2864, 1983, 611, 799, 246, 0, 3.501, 0.712, 0.692, 0.288, 0.702),
    "YOPO": (2821, 2543, 240, 239, 37, 0, 2.104, 0.914, 0.901, 0.086, 0.907),
    "Dn3DUnet": (2598, 2340, 146, 442, 112, 0, 2.807, 0.841, 0.9, 0.159, 0.869),
    "UMC": (2781, 2642, 68, 140, 68, 0, 1.873, 0.949, 0.95, 0.051, 0.949),
    "TM-T": (2604, 1898, 20, 884, 412, 0, 1.528, 0.682, 0.728, 0.318, 0.704),
    "TM-F": (2604, 2267, 331, 515, 6, 0, 1.767, 0.814, 0.87, 0.185, 0.841),
}
#: Table 3: {method: {column: value}}; columns RR TP FP FN MH RO AD recall precision miss_rate
#: f1 (AD in voxels; the paper left 3D MS-D's MH empty: None)
TABLE3_LOCALIZATION: Mapping[str, Mapping[str, float | None]] = MappingProxyType({
    method: MappingProxyType(dict(zip(_LOC_COLUMNS, row, strict=True)))
    for method, row in _LOC_ROWS.items()})

_CLASS_ROWS = {
    "3D MS-D": (0.192, 0.408, 0.437, 0.416, 0.368, 0.461, 0.492, 0.719, 0.948, 0.851, 0.942,
                0.964),
    "DeepFinder": (0.61, 0.729, 0.8, 0.911, 0.783, 0.848, 0.866, 0.939, 1.0, 0.984, 0.993, 0.993),
    "3D ResNet": (0.193, 0.185, 0.405, 0.407, 0.334, 0.445, 0.491, 0.628, 0.906, 0.719, 0.868,
                  0.817),
    "YOPO": (0.558, 0.741, 0.67, 0.834, 0.696, 0.682, 0.795, 0.896, 0.987, 0.83, 0.923, 0.993),
    "Dn3DUnet": (0.529, 0.577, 0.569, 0.674, 0.332, 0.523, 0.462, 0.676, 0.925, 0.684, 0.907,
                 0.974),
    "UMC": (0.661, 0.827, 0.839, 0.947, 0.855, 0.873, 0.899, 0.981, 0.997, 0.98, 1.0, 0.997),
    "TM-T": (0.2, 0.102, 0.248, 0.727, 0.555, 0.869, 0.835, 0.88, 0.934, 0.97, 0.968, 0.945),
    "TM-F": (0.319, 0.219, 0.207, 0.66, 0.589, 0.808, 0.815, 0.945, 0.939, 0.966, 0.968, 0.945),
}
#: Table 4: {method: {class: F1}}
TABLE4_CLASS_F1: Mapping[str, Mapping[str, float]] = MappingProxyType({
    method: MappingProxyType(dict(zip(CLASSES, row, strict=True)))
    for method, row in _CLASS_ROWS.items()})

#: Table 6: {method: (small, medium, large)} mean class F1 per size group (Table 5's groups)
TABLE6_SIZE_GROUP_F1: Mapping[str, tuple[float, float, float]] = MappingProxyType({
    "3D MS-D": (0.364, 0.694, 0.953),
    "DeepFinder": (0.767, 0.927, 0.993),
    "3D ResNet": (0.305, 0.638, 0.843),
    "YOPO": (0.7, 0.838, 0.958),
    "Dn3DUnet": (0.536, 0.654, 0.941),
    "UMC": (0.826, 0.946, 0.999),
    "TM-T": (0.366, 0.898, 0.957),
    "TM-F": (0.399, 0.895, 0.957),
})

#: Table 7: {method: (training, inference)} as printed (each participant's own hardware). The
#: paper's two template-matching rows read "GPU 27h 24m" and "CPU 1h 24m", the reverse of its
#: text (1 h 24 m on a GTX 1080 Ti, 27 h 24 m on a 16-core CPU); they are given here as the
#: text says.
TABLE7_TIMINGS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "3D MS-D": ("168h", "5m"),
    "DeepFinder": ("50h", "20m"),
    "3D ResNet": ("5h", "2h"),
    "YOPO": ("8h", "40m"),
    "Dn3DUnet": ("15h 10m", "1m 41s"),
    "UMC": ("16h", "42m"),
    "TM-T/TM-F GPU (GTX 1080 Ti)": ("N/A", "1h 24m"),
    "TM-T/TM-F CPU (16 cores)": ("N/A", "27h 24m"),
})

#: Table 8 (appendix): localization F1 of template matching with the appendix's protocol
TABLE8_TM_LOCALIZATION_F1: Mapping[str, float] = MappingProxyType({
    "TM-T-2020": 0.468, "TM-F-2020": 0.663, "TM-T-2019": 0.389, "TM-F-2019": 0.735})
_TABLE8_ORDER = ("3qm1", "1s3x", "3h84", "3gl1", "2cg9", "3d2f", "1u6g", "3cf3", "1bxn", "1qvr",
                 "4cr2", "4d8q")  # the appendix prints 3qm1 before 1s3x and 3h84 before 3gl1
_TABLE8_ROWS = {
    "TM-T-2020": (0.046, 0.128, 0.34, 0.064, 0.178, 0.429, 0.28, 0.579, 0.683, 0.583, 0.937,
                  0.94),
    "TM-F-2020": (0.064, 0.169, 0.364, 0.053, 0.207, 0.492, 0.34, 0.653, 0.696, 0.611, 0.91,
                  0.945),
}
#: Table 8 (appendix): per-class F1 of template matching on the 2020 data, appendix protocol
TABLE8_TM_CLASS_F1: Mapping[str, Mapping[str, float]] = MappingProxyType({
    method: MappingProxyType(dict(zip(_TABLE8_ORDER, row, strict=True)))
    for method, row in _TABLE8_ROWS.items()})


def class_f1_row(method: str, classes: Sequence[str] = CLASSES) -> list[float]:
    """The paper's per-class F1 of ``method`` (Table 4, or Table 8 for ``TM-x-2020``), in
    ``classes`` order. Raises KeyError naming the method when the paper has no such row."""
    table = TABLE4_CLASS_F1 if method in TABLE4_CLASS_F1 else TABLE8_TM_CLASS_F1
    if method not in table:
        raise KeyError(f"the paper has no per-class row {method!r}; rows: "
                       f"{', '.join([*TABLE4_CLASS_F1, *TABLE8_TM_CLASS_F1])}")
    return [float(table[method][name]) for name in classes]


def rank_correlation(ours: Mapping[str, float], method: str = "TM-F") -> tuple[float, int]:
    """Spearman rank correlation between our per-class F1 and the paper's row ``method``,
    over the classes present in both (NaN values skipped). Returns (rho, n_classes); rho is NaN
    with fewer than 3 classes."""
    from scipy.stats import spearmanr

    names = [c for c in CLASSES if c in ours and ours[c] == ours[c]]
    if len(names) < 3:
        return float("nan"), len(names)
    paper = class_f1_row(method, names)
    rho = spearmanr([float(ours[c]) for c in names], paper).statistic
    return float(rho), len(names)
