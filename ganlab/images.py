"""Image grids for people to look at: generated vs real, before vs after pruning, strips."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

_GAP = 12
_TITLE = 16


def to_pil_grid(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """Images in [-1, 1], (N, C, H, W) -> one RGB grid image."""
    grid = make_grid(images.detach().float().cpu(), nrow=nrow, padding=2, normalize=True, value_range=(-1, 1))
    array = grid.mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array).convert("RGB")


def titled_row(panels: list[tuple[str, Image.Image]]) -> Image.Image:
    """Panels side by side on white, each with its title above it."""
    width = sum(p.width for _, p in panels) + _GAP * (len(panels) + 1)
    height = max(p.height for _, p in panels) + _TITLE + 2 * _GAP
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = _GAP
    for title, panel in panels:
        draw.text((x, _GAP // 2), title, fill="black")
        canvas.paste(panel, (x, _GAP + _TITLE))
        x += panel.width + _GAP
    return canvas


def generated_vs_real(generated: torch.Tensor, real: torch.Tensor, epoch: int) -> Image.Image:
    return titled_row([(f"generated (epoch {epoch}, fixed noise)", to_pil_grid(generated)),
                       ("real", to_pil_grid(real))])
