"""Array backends of the template matcher: numpy/scipy.fft (CPU) and PyTorch (CUDA, or CPU for
tests). :mod:`napari_shrec.core.tm` writes the algorithm once against the small set of
primitives here; both backends evaluate the same formulas (same spline coefficients, same taps,
same FFT layout), so they agree to float32 rounding.

Rotation: the template's cubic B-spline coefficients (``scipy.ndimage.spline_filter``, mode
"grid-constant": zero beyond the cube) are evaluated at the rotated grid. CPU:
``scipy.ndimage.affine_transform(order=3, mode="grid-constant", prefilter=False)``; torch: the
same 4 × 4 × 4 taps with the cubic B-spline basis, coefficients outside the cube = 0. Order 1 is
trilinear with zero outside.

Correlation spectra: ``conj(F[box])`` of a real box is the spectrum of the box reflected through
its centre, so the template is flipped before its transform and the product with the volume's
spectrum needs no conjugation pass.

Pruned FFT of a small box into the large padded grid: the box (edge n, centre h = n // 2) is
placed *wrapped* (its centre at index 0, negative offsets at the end of each axis), and the
forward transform is done axis by axis on the non-zero part only: ``rfft`` along x of n² rows,
``fft`` along y of n·(Lx/2+1) rows, ``fft`` along z of Ly·(Lx/2+1) rows; about a third of the
cost of a full ``rfftn``. On the CPU the inverse is pruned the other way round: only the output
rows that are kept go through the next axis's transform.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["FlcfBackend", "NumpyBackend", "TorchBackend", "make_backend", "DEVICES"]

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "torch-cpu")


def _place_wrapped(dst: Any, src: Any, axis: int) -> None:
    """Copy ``src`` (odd length n along ``axis``, centre n // 2) into ``dst`` wrapped: src index
    h + k → dst index k mod L."""
    n = src.shape[axis]
    h = n // 2
    length = dst.shape[axis]

    def sl(obj: Any, s: slice) -> Any:
        index = [slice(None)] * 3
        index[axis] = s
        return obj[tuple(index)]

    positive = sl(src, slice(h, n))           # offsets 0 … h
    negative = sl(src, slice(0, h))           # offsets -h … -1
    sl(dst, slice(0, n - h))[...] = positive
    if h:
        sl(dst, slice(length - h, length))[...] = negative


_FUSED: list[Any] = []


def _fused_kernel() -> Any:
    """The compiled (numba, cached on disk) kernel of ``NumpyBackend.update_max_scaled``."""
    if not _FUSED:
        import numba

        @numba.njit(parallel=True, nogil=True, cache=True)
        def fused(cc, scale, best, best_index, index):  # pragma: no cover - jit
            nz, ny, nx = best.shape
            for z in numba.prange(nz):
                for y in range(ny):
                    for x in range(nx):
                        s = cc[z, y, x] * scale[z, y, x]
                        if s > best[z, y, x]:
                            best[z, y, x] = s
                            best_index[z, y, x] = index

        _FUSED.append(fused)
    return _FUSED[0]


class FlcfBackend:
    """Primitives the matcher needs; subclasses implement them for one array library."""

    name = "abstract"

    # -- subclasses --------------------------------------------------------------------------
    def put(self, array: np.ndarray) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def get(self, array: Any) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...], kind: str) -> Any:  # pragma: no cover - interface
        """``kind``: "real" (float32), "complex" (complex64) or "index" (int32)."""
        raise NotImplementedError

    def rfft(self, x: Any, axis: int) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def fft(self, x: Any, axis: int) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def rfftn(self, x: Any) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def irfftn(self, x: Any, shape: tuple[int, int, int]) -> Any:  # pragma: no cover
        raise NotImplementedError

    def rotate(self, coefficients: Any, matrix_zyx: np.ndarray, order: int
               ) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def update_max(self, best: Any, best_index: Any, score: Any, index: int
                   ) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def update_max_scaled(self, best: Any, best_index: Any, cc: Any, scale: Any,
                          index: int) -> None:
        """``best = max(best, cc · scale)``; ``best_index = index`` where it grew."""
        self.update_max(best, best_index, cc * scale, index)

    def synchronize(self) -> None:
        """Wait for queued device work (timings)."""

    def flip(self, box: Any) -> Any:  # pragma: no cover - interface
        """The cube reflected through its centre (all three axes reversed)."""
        raise NotImplementedError

    def multiply_(self, a: Any, b: Any) -> Any:  # pragma: no cover - interface
        """``a *= b`` in place; returns ``a``."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    def correlation_spectrum(self, box: Any, fft_shape: tuple[int, int, int]) -> Any:
        """``conj(rfftn(box))`` over ``fft_shape`` for a real odd cube centred at ``n // 2``:
        the spectrum of the box reflected through its centre (no conjugation pass needed)."""
        return self.box_spectrum(self.flip(box), fft_shape)

    def box_spectrum(self, box: Any, fft_shape: tuple[int, int, int]) -> Any:
        """``rfftn`` over ``fft_shape`` of the odd cube ``box`` placed wrapped (pruned)."""
        n = box.shape[0]
        lz, ly, lx = fft_shape
        a = self.zeros((n, n, lx), "real")
        _place_wrapped(a, box, 2)
        a = self.rfft(a, 2)
        b = self.zeros((n, ly, a.shape[2]), "complex")
        _place_wrapped(b, a, 1)
        b = self.fft(b, 1)
        c = self.zeros((lz, ly, a.shape[2]), "complex")
        _place_wrapped(c, b, 0)
        return self.fft(c, 0)

    def correlate(self, correlation_spectrum: Any, volume_spectrum: Any,
                  fft_shape: tuple[int, int, int], rows: tuple[int, int, int, int, int, int]
                  ) -> Any:
        """``Σ_k box(k) · volume(x + k)`` for x in ``rows`` = (z0, z1, y0, y1, x0, x1) of the
        padded grid, from ``correlation_spectrum`` = conj(B̂): ``irfftn(conj(B̂) · V̂)`` cropped.
        Overwrites ``correlation_spectrum``."""
        out = self.irfftn(self.multiply_(correlation_spectrum, volume_spectrum), fft_shape)
        z0, z1, y0, y1, x0, x1 = rows
        return out[z0:z1, y0:y1, x0:x1]

    def filter_box(self, box: Any, filter_rfft: Any) -> Any:
        """``irfftn(rfftn(box) · filter)`` at the box's own size."""
        return self.irfftn(self.rfftn(box) * filter_rfft, tuple(box.shape))


class NumpyBackend(FlcfBackend):
    """numpy + scipy.fft (``workers`` threads) + scipy.ndimage."""

    name = "cpu"

    def __init__(self, threads: int = 0) -> None:
        self.workers = int(threads) if threads and threads > 0 else (os.cpu_count() or 1)

    def put(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)

    def get(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array)

    def zeros(self, shape: tuple[int, ...], kind: str) -> np.ndarray:
        dtype = {"real": np.float32, "complex": np.complex64, "index": np.int32}[kind]
        return np.zeros(shape, dtype=dtype)

    def rfft(self, x: np.ndarray, axis: int) -> np.ndarray:
        from scipy import fft

        return fft.rfft(x, axis=axis, workers=self.workers)

    def fft(self, x: np.ndarray, axis: int) -> np.ndarray:
        from scipy import fft

        return fft.fft(x, axis=axis, workers=self.workers, overwrite_x=True)

    def rfftn(self, x: np.ndarray) -> np.ndarray:
        from scipy import fft

        return fft.rfftn(x, workers=self.workers)

    def irfftn(self, x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
        from scipy import fft

        return fft.irfftn(x, s=shape, workers=self.workers, overwrite_x=True)

    def flip(self, box: np.ndarray) -> np.ndarray:
        return box[::-1, ::-1, ::-1]

    def correlate(self, correlation_spectrum: np.ndarray, volume_spectrum: np.ndarray,
                  fft_shape: tuple[int, int, int], rows: tuple[int, int, int, int, int, int]
                  ) -> np.ndarray:
        """As :meth:`FlcfBackend.correlate`, with a pruned inverse: after each axis's inverse
        transform only the rows that are needed go on (z, then y, then the real x transform);
        40 % faster than ``irfftn`` then crop on a 225 × 288 × 288 grid."""
        from scipy import fft

        z0, z1, y0, y1, x0, x1 = rows
        a = self.multiply_(correlation_spectrum, volume_spectrum)
        a = fft.ifft(a, axis=0, workers=self.workers, overwrite_x=True)[z0:z1]
        a = fft.ifft(a, axis=1, workers=self.workers, overwrite_x=True)[:, y0:y1]
        return fft.irfft(a, n=fft_shape[2], axis=2, workers=self.workers)[:, :, x0:x1]

    def multiply_(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a *= b
        return a

    def rotate(self, coefficients: np.ndarray, matrix_zyx: np.ndarray, order: int) -> np.ndarray:
        from scipy import ndimage

        n = coefficients.shape[0]
        c = np.full(3, float(n // 2))
        offset = c - matrix_zyx @ c
        return ndimage.affine_transform(coefficients, matrix_zyx, offset=offset,
                                        output_shape=coefficients.shape, output=np.float32,
                                        order=order, mode="grid-constant", prefilter=False)

    def update_max(self, best: np.ndarray, best_index: np.ndarray, score: np.ndarray,
                   index: int) -> None:
        better = np.greater(score, best)
        np.copyto(best, score, where=better)
        np.copyto(best_index, np.int32(index), where=better)

    def update_max_scaled(self, best: np.ndarray, best_index: np.ndarray, cc: np.ndarray,
                          scale: np.ndarray, index: int) -> None:
        """``update_max(best, best_index, cc * scale, index)`` in one parallel pass (numba)."""
        import numba

        numba.set_num_threads(min(self.workers, numba.config.NUMBA_NUM_THREADS))
        _fused_kernel()(cc, scale, best, best_index, np.int32(index))


class TorchBackend(FlcfBackend):
    """PyTorch on ``device`` ("cuda" or "cpu"); float32 / complex64 throughout."""

    def __init__(self, device: str = "cuda") -> None:
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' asked for, but torch sees no CUDA GPU")
        self.torch = torch
        self.device = torch.device(device)
        self.name = "cuda" if device == "cuda" else "torch-cpu"
        # "torch-cpu" keeps torch's own thread setting (torch.set_num_threads is global)
        self._grid: Any = None
        self._grid_edge = -1

    def put(self, array: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(array)).to(self.device)

    def get(self, array: Any) -> np.ndarray:
        return array.detach().cpu().numpy()

    def zeros(self, shape: tuple[int, ...], kind: str) -> Any:
        torch = self.torch
        dtype = {"real": torch.float32, "complex": torch.complex64, "index": torch.int32}[kind]
        return torch.zeros(shape, dtype=dtype, device=self.device)

    def rfft(self, x: Any, axis: int) -> Any:
        return self.torch.fft.rfft(x, dim=axis)

    def fft(self, x: Any, axis: int) -> Any:
        return self.torch.fft.fft(x, dim=axis)

    def rfftn(self, x: Any) -> Any:
        return self.torch.fft.rfftn(x)

    def irfftn(self, x: Any, shape: tuple[int, int, int]) -> Any:
        return self.torch.fft.irfftn(x, s=tuple(int(s) for s in shape))

    def flip(self, box: Any) -> Any:
        return self.torch.flip(box, dims=(0, 1, 2))

    def multiply_(self, a: Any, b: Any) -> Any:
        return a.mul_(b)

    def _output_grid(self, n: int) -> Any:
        """(n³, 3) output coordinates (z, y, x) relative to the centre, float32."""
        if self._grid_edge != n:
            torch = self.torch
            g = torch.arange(n, dtype=torch.float32, device=self.device) - float(n // 2)
            zz, yy, xx = torch.meshgrid(g, g, g, indexing="ij")
            self._grid = torch.stack([zz.reshape(-1), yy.reshape(-1), xx.reshape(-1)], dim=1)
            self._grid_edge = n
        return self._grid

    def rotate(self, coefficients: Any, matrix_zyx: np.ndarray, order: int) -> Any:
        torch = self.torch
        n = int(coefficients.shape[0])
        m = torch.as_tensor(np.asarray(matrix_zyx, dtype=np.float32), device=self.device)
        # input coordinate of every output voxel: c + M (o - c)  (float64 would change nothing
        # measurable: the taps' weights are float32 on the CPU path too)
        pts = self._output_grid(n) @ m.T + float(n // 2)
        base = torch.floor(pts)
        t = pts - base
        base = base.to(torch.int64)
        if order == 3:
            t2 = t * t
            t3 = t2 * t
            weights = [(1 - t) ** 3 / 6, (3 * t3 - 6 * t2 + 4) / 6,
                       (-3 * t3 + 3 * t2 + 3 * t + 1) / 6, t3 / 6]
            first = -1
        elif order == 1:
            weights = [1 - t, t]
            first = 0
        else:
            raise ValueError(f"interpolation order must be 1 or 3, got {order}")
        taps = len(weights)
        w = torch.stack(weights, dim=2)                    # (N, 3 axes, taps)
        idx = base[:, :, None] + first + torch.arange(taps, device=self.device)  # (N, 3, taps)
        valid = (idx >= 0) & (idx < n)
        w = torch.where(valid, w, torch.zeros((), dtype=w.dtype, device=self.device))
        idx = idx.clamp(0, n - 1)
        flat = coefficients.reshape(-1)
        iz, iy, ix = idx[:, 0], idx[:, 1], idx[:, 2]
        wz, wy, wx = w[:, 0], w[:, 1], w[:, 2]
        out = torch.zeros(pts.shape[0], dtype=torch.float32, device=self.device)
        for a in range(taps):
            row_z = iz[:, a] * n
            for b in range(taps):
                row = (row_z + iy[:, b]) * n
                wzy = wz[:, a] * wy[:, b]
                for c in range(taps):
                    out += wzy * wx[:, c] * flat[row + ix[:, c]]
        return out.reshape(n, n, n)

    def update_max(self, best: Any, best_index: Any, score: Any, index: int) -> None:
        better = score > best
        best.copy_(self.torch.where(better, score, best))
        best_index.masked_fill_(better, int(index))

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def make_backend(device: str, threads: int = 0) -> FlcfBackend:
    """The backend of a ``MatchParams.device`` value: "auto" (CUDA when torch sees a GPU, else
    CPU), "cpu" (numpy/scipy), "cuda" or "torch-cpu" (PyTorch on the CPU: for tests)."""
    from .devices import resolve_device

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    used = resolve_device(device)
    if used == "cpu":
        return NumpyBackend(threads)
    if used == "cuda":
        return TorchBackend("cuda")
    return TorchBackend("cpu")
