"""Time opening a 512×512×512 float32 MRC through the napari reader (target: well under 1 s).

Run:  python benchmarks/bench_reader.py [--size 512] [--keep PATH]

It writes a random 512³ float32 volume (512 MiB) to a temporary folder, then times
``get_mrc_reader(path)(path)``: the memory-mapped read plus building the Image layer-data tuple
(contrast limits from a strided sample). It also times building a napari Image layer from the tuple
when napari is installed. The page cache is warm after writing; "cold" numbers need a fresh boot or
``echo 3 > /proc/sys/vm/drop_caches``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="edge length in voxels (512)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None,
                        help="use (or create) this MRC file instead of a temporary one")
    args = parser.parse_args()

    from napari_shrec._reader import get_mrc_reader
    from napari_shrec.io.mrc import write_mrc

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / f"bench_{args.size}.mrc"
        if not path.exists():
            n = args.size
            data = np.empty((n, n, n), dtype=np.float32)
            rng = np.random.default_rng(0)
            for z in range(n):  # slab by slab: no float64 temporary of the whole volume
                data[z] = rng.standard_normal((n, n), dtype=np.float32)
            t0 = time.perf_counter()
            write_mrc(path, data, voxel_size_nm=1.0)
            print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
                  f"{time.perf_counter() - t0:.2f} s")
            del data

        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            reader = get_mrc_reader(str(path))
            assert reader is not None
            (layer_data,) = reader(str(path))
            times.append(time.perf_counter() - t0)
        data, kwargs, kind = layer_data
        print(f"get_mrc_reader(path)(path) on {data.shape} {data.dtype}: "
              f"best {min(times) * 1e3:.1f} ms, median {np.median(times) * 1e3:.1f} ms "
              f"(contrast limits {tuple(round(c, 3) for c in kwargs['contrast_limits'])})")

        try:
            from napari.layers import Layer
        except ImportError:
            return
        t0 = time.perf_counter()
        layer = Layer.create(data, kwargs, kind)
        print(f"napari Image layer from the tuple: {(time.perf_counter() - t0) * 1e3:.1f} ms "
              f"(data is a memmap: {isinstance(layer.data, np.memmap)})")


if __name__ == "__main__":
    main()
