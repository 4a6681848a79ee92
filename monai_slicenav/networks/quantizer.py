"""Finite scalar quantization (FSQ).

F. Mentzer, D. Minnen, E. Agustsson, M. Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR 2024.
Each latent channel is bounded and rounded to one of ``levels[i]`` values; the codebook is the product of the
levels, with no codebook parameters and no auxiliary losses. Gradients pass straight through the rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FSQ"]

_EPS = 1e-3  # keeps tanh's bound strictly inside the outer levels


class FSQ(nn.Module):
    """Quantize channel-first latents (B, d, ...) with ``d = len(levels)`` onto a grid of ``prod(levels)`` codes.

    Codes are returned normalised to [-1, 1] per channel; :meth:`codes_to_indices` and :meth:`indices_to_codes`
    convert between codes and integer indices in ``[0, codebook_size)``.

    Args:
        levels: number of values per channel, each >= 2, e.g. ``(8, 5, 5, 5)`` (1000 codes).

    Raises:
        ValueError: for fewer than one level or a level below 2.

    Example::

        fsq = FSQ((8, 5, 5, 5))
        codes = fsq(torch.randn(2, 4, 16, 16))  # (2, 4, 16, 16) on the grid
        assert torch.equal(fsq.indices_to_codes(fsq.codes_to_indices(codes)), codes)
    """

    def __init__(self, levels: Sequence[int]) -> None:
        super().__init__()
        levels = [int(level) for level in levels]
        if not levels or min(levels) < 2:
            raise ValueError(f"levels must be a non-empty sequence of ints >= 2, got {levels}.")
        self.levels_list = levels
        level_t = torch.tensor(levels, dtype=torch.float32)
        basis = torch.cumprod(torch.tensor([1] + levels[:-1], dtype=torch.int64), dim=0)
        half_level = (level_t - 1) * (1 + _EPS) / 2
        offset = torch.where(level_t % 2 == 0, 0.5, 0.0)
        # derived constants, rebuilt from ``levels``: non-persistent, so state dicts stay free of them
        self.register_buffer("_levels", level_t, persistent=False)
        self.register_buffer("_basis", basis, persistent=False)
        self.register_buffer("_half_level", half_level, persistent=False)
        self.register_buffer("_offset", offset, persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_level), persistent=False)
        self.register_buffer("_half_width", (level_t // 2), persistent=False)

    @property
    def dim(self) -> int:
        """Latent channels d."""
        return len(self.levels_list)

    @property
    def codebook_size(self) -> int:
        """Number of distinct codes, ``prod(levels)``."""
        return int(torch.tensor(self.levels_list).prod())

    def _channel_view(self, buffer: torch.Tensor, ndim: int) -> torch.Tensor:
        return buffer.view(1, -1, *([1] * (ndim - 2)))  # (1, d, 1, ...) to broadcast over (B, d, ...)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """Squash (B, d, ...) latents into each channel's level range (before rounding)."""
        shift, half_level, offset = (
            self._channel_view(b, z.ndim) for b in (self._shift, self._half_level, self._offset)
        )
        return torch.tanh(z + shift) * half_level - offset

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Quantize (B, d, ...) latents; returns codes normalised to [-1, 1] (straight-through gradients).

        Raises:
            ValueError: when the channel dim is not ``len(levels)``.
        """
        if z.ndim < 2 or z.shape[1] != self.dim:
            raise ValueError(f"FSQ expects (B, {self.dim}, ...) latents, got shape {tuple(z.shape)}.")
        bounded = self.bound(z)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        return rounded / self._channel_view(self._half_width, z.ndim)

    def snap(self, values: torch.Tensor) -> torch.Tensor:
        """(B, d, ...) predicted codes -> the nearest valid codes (each channel rounded onto its level grid)."""
        half_width, levels = (self._channel_view(b, values.ndim) for b in (self._half_width, self._levels))
        digits = torch.minimum(torch.round(values * half_width + half_width).clamp(min=0), levels - 1)
        return (digits - half_width) / half_width

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, d, ...) normalised codes -> (B, ...) int64 indices."""
        half_width, basis = (self._channel_view(b, codes.ndim) for b in (self._half_width, self._basis))
        digits = torch.round(codes * half_width + half_width).long()  # 0 .. L - 1 per channel
        return (digits * basis).sum(dim=1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(B, ...) int64 indices -> (B, d, ...) normalised codes."""
        basis, levels, half_width = (
            self._channel_view(b, indices.ndim + 1) for b in (self._basis, self._levels, self._half_width)
        )
        digits = (indices.unsqueeze(1) // basis) % levels.long()
        return (digits.float() - half_width) / half_width
