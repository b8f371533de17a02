"""The tilt series' two heavy steps on PyTorch (CUDA when present): rotation + slice projection,
and multislice. Mirrors :func:`napari_shrec.core.tiltseries._project_slices` and
``_multislice_image`` operation for operation; only the random numbers differ (torch's
generator). With sample noise off the two backends agree to float32 rounding (tested).

Rotation evaluates the cubic B-spline from the same pre-filtered coefficients as the CPU path:
for every output point, 4 × 4 taps of the (z, x) coefficient plane weighted by the cubic B-spline
basis β³, all y planes at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .tiltseries import bspline_weights

__all__ = ["torch_device", "TorchTiltWorker"]


def torch_device(name: str) -> Any:
    """The torch device for a TiltSeriesParams ``device`` value ("cuda" or "torch-cpu")."""
    import torch

    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device='cuda' asked for, but torch sees no CUDA GPU")
        return torch.device("cuda")
    return torch.device("cpu")


class TorchTiltWorker:
    """Holds the B-spline coefficients on the device and simulates tilts with torch.

    Args:
        coefficients: float32 (z + 2 pad, y, x + 2 pad) from ``_spline_coefficients``.
        device: a torch device.
        seed: seed of the torch generator for sample noise.
    """

    def __init__(self, coefficients: np.ndarray, device: Any, seed: int) -> None:
        import torch

        self.torch = torch
        self.device = device
        # (y, z, x): every y plane is interpolated with the same (z, x) taps.
        self.coefficients = torch.from_numpy(np.ascontiguousarray(
            coefficients.transpose(1, 0, 2))).to(device)
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(int(seed) % (2 ** 63))

    def _rotate(self, geometry: Any, rows: int, nx: int) -> Any:
        """Rotated planes (y, rows, nx) for output rows z' and columns x'."""
        torch = self.torch
        coeff = self.coefficients
        _, nzc, nxc = coeff.shape
        zp = torch.arange(rows, device=self.device, dtype=torch.float64)[:, None]
        xp = torch.arange(nx, device=self.device, dtype=torch.float64)[None, :]
        m = geometry.matrix
        z_in = m[0, 0] * zp + m[0, 1] * xp + geometry.offset[0]
        x_in = m[1, 0] * zp + m[1, 1] * xp + geometry.offset[1]
        # scipy's mode="constant": points outside the input's extent are 0.
        inside = ((z_in >= -0.5) & (z_in <= nzc - 0.5) & (x_in >= -0.5)
                  & (x_in <= nxc - 0.5)).to(torch.float32)
        z0 = torch.floor(z_in)
        x0 = torch.floor(x_in)
        wz = bspline_weights((z_in - z0).to(torch.float32))
        wx = bspline_weights((x_in - x0).to(torch.float32))
        z0 = z0.to(torch.int64)
        x0 = x0.to(torch.int64)
        out = torch.zeros((coeff.shape[0], rows, nx), dtype=torch.float32, device=self.device)
        for a in range(4):
            zi = z0 + (a - 1)
            z_ok = (zi >= 0) & (zi < nzc)
            zi_c = zi.clamp(0, nzc - 1)
            for b in range(4):
                xi = x0 + (b - 1)
                ok = (z_ok & (xi >= 0) & (xi < nxc)).to(torch.float32)
                weight = wz[a] * wx[b] * ok * inside
                out += coeff[:, zi_c, xi.clamp(0, nxc - 1)] * weight
        return out

    def project_slices(self, geometry: Any, nx: int, params: Any, voxel_nm: float,
                       ice_paths: np.ndarray) -> Any:
        """Projected potential (V·nm) per slice: torch float32 (n_slices, y, nx) on the device."""
        torch = self.torch
        d = geometry.slice_vox
        b0, b1 = geometry.box_start, geometry.box_stop
        plane = self._rotate(geometry, (b1 - b0) * d, nx)  # (y, rows, nx)
        ny = plane.shape[0]
        protein = plane.reshape(ny, b1 - b0, d, nx)
        fraction = torch.clamp(protein, min=0.0) / params.protein_potential_v
        fraction = torch.clamp(fraction, max=1.0)
        ice = torch.from_numpy(ice_paths).to(self.device)[None].repeat(ny, 1, 1)  # (y, k, x)
        ice[:, b0:b1] = torch.clamp(ice[:, b0:b1] - fraction.sum(dim=2), min=0.0)
        total = params.ice_potential_v * ice
        total[:, b0:b1] += protein.sum(dim=2)
        if params.structural_noise_v > 0:
            count = (protein >= params.support_threshold_v).sum(dim=2).to(torch.float32)
            total[:, b0:b1] += params.structural_noise_v * torch.sqrt(count) * torch.randn(
                count.shape, generator=self.generator, device=self.device)
        if params.ice_variation_v > 0:
            total += params.ice_variation_v * torch.sqrt(ice) * torch.randn(
                ice.shape, generator=self.generator, device=self.device)
        return (total * voxel_nm).permute(1, 0, 2).contiguous()

    def multislice_image(self, slices_vnm: Any, setup: Any) -> np.ndarray:
        """Noise-free image |ψ|² as float32 numpy (ny, nx); the physics is in ``setup``
        (``tiltseries._multislice_setup``), shared with the CPU path."""
        torch = self.torch
        n_slices, ny_fov, nx_fov = slices_vnm.shape
        y0, x0 = setup.y0, setup.x0
        margin = torch.from_numpy(setup.margin).to(self.device)
        propagator = torch.from_numpy(setup.propagator).to(self.device)
        transfer = torch.from_numpy(setup.transfer).to(self.device)
        wave = torch.ones((setup.ny, setup.nx), dtype=torch.complex64, device=self.device)
        field = torch.empty((setup.ny, setup.nx), dtype=torch.float32, device=self.device)
        for k in range(n_slices):
            field[:] = margin[k][None, :]
            field[y0:y0 + ny_fov, x0:x0 + nx_fov] = slices_vnm[k]
            wave = wave * torch.exp(setup.phase_factor * field.to(torch.complex64))
            wave = torch.fft.ifft2(torch.fft.fft2(wave) * propagator)
        image_wave = torch.fft.ifft2(torch.fft.fft2(wave) * transfer)
        image_wave = image_wave[y0:y0 + ny_fov, x0:x0 + nx_fov]
        return (image_wave.abs() ** 2).to(torch.float32).cpu().numpy()
