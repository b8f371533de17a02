"""Picture for docs/reconstruction.md: grandmodel and reconstructions, central slices side by side.

Usage: python scripts/reconstruction_figure.py DATASET OUT.png [--noisefree-rec FILE] [--overwrite]

Top row: central z slice (x–y plane) of the noise-free grandmodel, of a reconstruction from the
noise-free projections, and of ``reconstruction.mrc`` (noisy projections), the last low-passed
with σ = 2 voxels. Bottom row: the same as x–z slices through the centre, where the missing wedge
elongates particles along z. Reconstructions must be in the dataset's native frame.
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
    parser.add_argument("--noisefree-rec", type=Path, default=None,
                        help="reconstruction of projections_noisefree.mrc (native frame)")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args()

    from matplotlib.figure import Figure
    from scipy import ndimage

    from napari_shrec.io._atomic import atomic_path
    from napari_shrec.io.dataset import load_dataset
    from napari_shrec.io.mrc import read_mrc

    dataset = load_dataset(args.dataset)
    truth = np.asarray(dataset.read_volume("grandmodel_noisefree").data)
    noisy = np.asarray(dataset.read_volume("reconstruction").data)
    if noisy.shape != truth.shape:
        raise SystemExit("reconstruction.mrc is not in the grandmodel's (native) frame")
    panels = [("grandmodel (noise-free)", truth)]
    if args.noisefree_rec is not None:
        panels.append(("WBP of noise-free projections", np.asarray(
            read_mrc(args.noisefree_rec).data)))
    panels.append(("WBP of noisy projections, σ = 2 px", ndimage.gaussian_filter(noisy, 2.0)))
    z, y = truth.shape[0] // 2, truth.shape[1] // 2
    figure = Figure(figsize=(5 * len(panels), 7.5), dpi=100)
    axes = figure.subplots(2, len(panels), gridspec_kw={"height_ratios": [2.56, 1]})
    for column, (title, volume) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        top.imshow(volume[z], cmap="gray")
        top.set_title(f"{title}\nx–y slice z = {z}")
        bottom.imshow(volume[:, y, :], cmap="gray", aspect="equal")
        bottom.set_title(f"x–z slice y = {y}")
        for axis in (top, bottom):
            axis.set_xticks([])
            axis.set_yticks([])
    figure.tight_layout(h_pad=2.5)
    with atomic_path(args.out, overwrite=args.overwrite) as tmp:
        figure.savefig(tmp, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
