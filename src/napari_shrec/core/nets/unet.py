"""A 3D U-Net for voxel-wise particle classification, with an optional denoising decoder.

Architecture (:class:`UNet3D`, configured by :class:`UNet3DConfig`):

- ``depth`` encoder levels, each two 3×3×3 convolution → normalisation → LeakyReLU blocks, then a
  2×2×2 max-pool; a bottleneck of two more blocks. Level ``i`` has ``width · 2**i`` channels
  (default 16, 32, 64 and 128 in the bottleneck).
- A decoder that goes back up level by level: 2×2×2 transposed convolution (or trilinear
  upsampling + 1×1×1 convolution), concatenation with the encoder's skip features, two blocks.
  With ``output_stride=2`` the class decoder stops one level early, so the logits are at half
  resolution (8× fewer voxels to decode, classify and search for peaks).
- A 1×1×1 convolution to ``n_classes`` logits (channel 0 background, channel k the k-th class
  of the checkpoint's ``class_names``).
- With ``denoise_head``, a second decoder of the same shape (sharing the encoder) ends in a
  1×1×1 convolution to one channel: the predicted noise-free potential, at full resolution — the
  multi-task set-up of UMC (SHREC'20's best method), whose denoising loss regularises the
  encoder.

Input sizes: each spatial size must be a multiple of ``2**depth`` (8 for the default depth 3),
so that every pooled level has an integer size and the skip connections line up;
:meth:`UNet3DConfig.check_input_shape` raises a ValueError naming the sizes otherwise. The output
of the class head has size ``input / output_stride``.

Tensors are ``[batch, channel, z, y, x]``. torch is imported by this module; import it only when
training or detecting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

__all__ = ["NORMS", "UPSAMPLES", "UNet3DConfig", "UNet3D", "count_parameters"]

NORMS: tuple[str, ...] = ("instance", "batch", "group")
UPSAMPLES: tuple[str, ...] = ("transposed", "trilinear")
_GROUPS = 8  # GroupNorm groups (fewer when a level has fewer channels)


@dataclass(frozen=True)
class UNet3DConfig:
    """Architecture of a :class:`UNet3D` (stored in every checkpoint).

    Attributes:
        in_channels: input channels (1: a tomogram).
        n_classes: output classes including background (13: background + 12 SHREC'20 classes).
        width: channels of the first level; level i has ``width · 2**i``.
        depth: number of 2× down-samplings (the bottleneck is at ``1 / 2**depth`` resolution).
            Inputs must be multiples of ``2**depth`` on every axis.
        norm: "instance" (default; per-patch statistics, robust with batch size 1 or 2),
            "batch" or "group" (8 groups).
        denoise_head: add the second decoder that predicts the noise-free potential.
        output_stride: 1 (logits at the input resolution) or 2 (half resolution).
        dropout: channel dropout probability in the bottleneck and decoder blocks (0: none).
        upsample: "transposed" (2×2×2 transposed convolution) or "trilinear" (trilinear
            up-sampling followed by a 1×1×1 convolution).
    """

    in_channels: int = 1
    n_classes: int = 13
    width: int = 16
    depth: int = 3
    norm: str = "instance"
    denoise_head: bool = False
    output_stride: int = 1
    dropout: float = 0.0
    upsample: str = "transposed"

    def __post_init__(self) -> None:
        for name, low in (("in_channels", 1), ("n_classes", 2), ("width", 1), ("depth", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {value!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.upsample not in UPSAMPLES:
            raise ValueError(f"upsample must be one of {UPSAMPLES}, got {self.upsample!r}")
        if self.output_stride not in (1, 2) or isinstance(self.output_stride, bool):
            raise ValueError(f"output_stride must be 1 or 2, got {self.output_stride!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))
        object.__setattr__(self, "denoise_head", bool(self.denoise_head))

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels per level, encoder level 0 … bottleneck (``depth + 1`` values)."""
        return tuple(self.width * 2 ** i for i in range(self.depth + 1))

    @property
    def input_multiple(self) -> int:
        """Every input size must be a multiple of this (``2**depth``)."""
        return 2 ** self.depth

    def check_input_shape(self, shape_zyx: tuple[int, ...]) -> None:
        """Raise ValueError unless every size of ``shape_zyx`` is a positive multiple of
        ``2**depth``."""
        m = self.input_multiple
        sizes = tuple(int(s) for s in shape_zyx)
        if len(sizes) != 3 or any(s < m or s % m for s in sizes):
            raise ValueError(f"input size (z, y, x) {sizes} is not a multiple of 2**depth = {m} "
                             f"on every axis (depth {self.depth}); pad or crop it, e.g. to "
                             f"{tuple(max(m, -(-s // m) * m) for s in sizes)}")

    def output_shape(self, shape_zyx: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (z, y, x) of the logits for an input of ``shape_zyx``."""
        self.check_input_shape(shape_zyx)
        return tuple(int(s) // self.output_stride for s in shape_zyx)  # type: ignore[return-value]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNet3DConfig:
        """The config of :meth:`to_dict`; ValueError names unknown keys."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown UNet3DConfig field(s) {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**data)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    groups = min(_GROUPS, channels)
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class _Block(nn.Sequential):
    """Two (3×3×3 conv → norm → LeakyReLU), optional channel dropout between them."""

    def __init__(self, c_in: int, c_out: int, norm: str, dropout: float = 0.0) -> None:
        layers: list[nn.Module] = [
            nn.Conv3d(c_in, c_out, 3, padding=1, bias=False), _norm(norm, c_out),
            nn.LeakyReLU(0.01, inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout3d(dropout))
        layers += [nn.Conv3d(c_out, c_out, 3, padding=1, bias=False), _norm(norm, c_out),
                   nn.LeakyReLU(0.01, inplace=True)]
        super().__init__(*layers)


class _Up(nn.Module):
    def __init__(self, c_in: int, c_out: int, mode: str) -> None:
        super().__init__()
        if mode == "transposed":
            self.op: nn.Module = nn.ConvTranspose3d(c_in, c_out, 2, stride=2)
        else:
            self.op = nn.Sequential(nn.Upsample(scale_factor=2, mode="trilinear",
                                                align_corners=False),
                                    nn.Conv3d(c_in, c_out, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class _Decoder(nn.Module):
    """Up from the bottleneck to level ``stop`` (0: full resolution), with skip connections."""

    def __init__(self, channels: tuple[int, ...], stop: int, norm: str, dropout: float,
                 upsample: str) -> None:
        super().__init__()
        depth = len(channels) - 1
        self.levels = list(range(depth - 1, stop - 1, -1))
        self.ups = nn.ModuleList(_Up(channels[i + 1], channels[i], upsample) for i in self.levels)
        self.blocks = nn.ModuleList(_Block(2 * channels[i], channels[i], norm, dropout)
                                    for i in self.levels)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for level, up, block in zip(self.levels, self.ups, self.blocks):
            x = block(torch.cat([up(x), skips[level]], dim=1))
        return x


class UNet3D(nn.Module):
    """The 3D U-Net of the module docstring.

    ``forward(x)`` takes ``[B, in_channels, Z, Y, X]`` (sizes multiples of ``2**depth``) and
    returns ``{"logits": [B, n_classes, Z/s, Y/s, X/s]}`` (s = ``output_stride``), plus
    ``"denoised": [B, 1, Z, Y, X]`` with ``denoise_head`` (unless ``with_denoised=False``,
    which skips the second decoder, e.g. for detection). Logits are un-normalised; apply a
    softmax over the channel axis for class probabilities.
    """

    def __init__(self, config: UNet3DConfig = UNet3DConfig()) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        d = config.depth
        self.encoders = nn.ModuleList(
            _Block(config.in_channels if i == 0 else ch[i - 1], ch[i], config.norm)
            for i in range(d))
        self.pool = nn.MaxPool3d(2)
        self.bottleneck = _Block(ch[d - 1], ch[d], config.norm, config.dropout)
        stop = 0 if config.output_stride == 1 else 1
        self.decoder = _Decoder(ch, stop, config.norm, config.dropout, config.upsample)
        self.head = nn.Conv3d(ch[stop], config.n_classes, 1)
        if config.denoise_head:
            self.denoise_decoder = _Decoder(ch, 0, config.norm, config.dropout, config.upsample)
            self.denoise_out = nn.Conv3d(ch[0], 1, 1)

    def forward(self, x: torch.Tensor, *, with_denoised: bool = True
                ) -> dict[str, torch.Tensor]:
        cfg = self.config
        if x.ndim != 5 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"UNet3D expects a [batch, {cfg.in_channels}, z, y, x] tensor, got "
                             f"shape {tuple(x.shape)}")
        cfg.check_input_shape(tuple(x.shape[2:]))
        skips: list[torch.Tensor] = []
        for encoder in self.encoders:
            x = encoder(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        out = {"logits": self.head(self.decoder(x, skips))}
        if cfg.denoise_head and with_denoised:
            out["denoised"] = self.denoise_out(self.denoise_decoder(x, skips))
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
