"""Pictures of a simulated dataset for docs/simulation.md.

Usage: python scripts/simulation_figures.py DATASET_FOLDER OUT.png [--overwrite]

One figure with four panels: the noise-free grandmodel's central z slice, the class mask of that
slice in class colours, the noise-free projection at 0° and the noisy one (low-passed to 2 nm so
the eye can see anything at the preset's noise).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from scipy import ndimage

    from napari_shrec.io._atomic import atomic_path
    from napari_shrec.io.dataset import load_dataset

    dataset = load_dataset(args.dataset)
    grandmodel = np.asarray(dataset.read_volume("grandmodel_noisefree").data)
    classes = np.asarray(dataset.read_class_mask().data)
    projections = np.asarray(dataset.read_volume("projections").data)
    clean = np.asarray(dataset.read_volume("projections_noisefree").data)
    angles = dataset.tilt_angles_deg
    zero = int(np.argmin(np.abs(angles))) if angles is not None else len(projections) // 2
    z = grandmodel.shape[0] // 2

    table = dataset.class_table
    colours = np.zeros((int(max(c.id for c in table)) + 1, 4))
    for cls in table:
        colours[cls.id] = (*cls.color, 1.0)
    colours[0] = (0, 0, 0, 1)

    figure = Figure(figsize=(12, 12), dpi=100)
    axes = figure.subplots(2, 2)
    axes[0, 0].imshow(grandmodel[z], cmap="gray")
    axes[0, 0].set_title(f"grandmodel (noise-free), z = {z}: potential (V)")
    axes[0, 1].imshow(classes[z], cmap=ListedColormap(colours), vmin=0,
                      vmax=len(colours) - 1, interpolation="nearest")
    axes[0, 1].set_title("class mask, same slice")
    axes[1, 0].imshow(clean[zero], cmap="gray")
    axes[1, 0].set_title(f"projection {angles[zero]:+.0f}°, noise-free")
    smoothed = ndimage.gaussian_filter(projections[zero], 2.0)
    axes[1, 1].imshow(smoothed, cmap="gray")
    axes[1, 1].set_title(f"projection {angles[zero]:+.0f}°, SNR as simulated, Gaussian σ = 2 px")
    for axis in axes.ravel():
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    with atomic_path(args.out, overwrite=args.overwrite) as tmp:
        figure.savefig(tmp, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
