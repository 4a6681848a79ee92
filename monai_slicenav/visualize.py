"""Pictures for people: a grid of rendered slices, each captioned with the action that led to it."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

__all__ = ["action_caption", "slice_grid"]

_CAPTION_LINES = 3
_PAD = 4  # pixels between tiles


def action_caption(step: int, action: torch.Tensor | None) -> list[str]:
    """Three caption lines for the slice reached at ``step`` by ``action`` (7,) (None for the start slice)."""
    if action is None:
        return [f"t={step} start", "", ""]
    dc, dr, dz = action[:3].tolist(), [math.degrees(r) for r in action[3:6].tolist()], float(action[6])
    return [
        f"t={step}  zoom {math.exp(dz):.3f}x",
        "move " + " ".join(f"{v + 0.0:+.1f}" for v in dc) + " mm",
        "turn " + " ".join(f"{v + 0.0:+.1f}" for v in dr) + " deg",
    ]


def slice_grid(
    slices: torch.Tensor,
    captions: Sequence[Sequence[str]],
    columns: int = 8,
    value_range: tuple[float, float] | None = None,
) -> Image.Image:
    """Tile (T, C, h, w) slices (first channel) row by row with captions under each tile, as a greyscale image.

    Args:
        slices: the slices in display order.
        captions: one list of text lines per slice.
        columns: tiles per row.
        value_range: intensities mapped to black and white; defaults to the 1st and 99th percentiles.

    Raises:
        ValueError: when the caption count differs from the slice count or ``columns`` < 1.
    """
    if len(captions) != len(slices) or columns < 1:
        raise ValueError(f"Need one caption per slice and columns >= 1, got {len(captions)}, {len(slices)}, {columns}.")
    frames = slices[:, 0].detach().float().cpu().numpy()
    lo, hi = value_range if value_range is not None else np.percentile(frames, [1, 99])
    pixels = np.clip((frames - lo) / max(hi - lo, 1e-12), 0, 1) * 255
    count, h, w = frames.shape
    font = ImageFont.load_default(size=max(8, min(14, w // 14)))
    line_height = int(font.size) + 2
    tile_h = h + _CAPTION_LINES * line_height + _PAD
    rows = math.ceil(count / columns)
    canvas = Image.new("L", (columns * (w + _PAD) + _PAD, rows * tile_h + _PAD), color=0)
    draw = ImageDraw.Draw(canvas)
    for index in range(count):
        x = _PAD + (index % columns) * (w + _PAD)
        y = _PAD + (index // columns) * tile_h
        canvas.paste(Image.fromarray(pixels[index].round().astype(np.uint8)), (x, y))
        for line, text in enumerate(captions[index]):
            draw.text((x, y + h + 1 + line * line_height), text, fill=255, font=font)
    return canvas
