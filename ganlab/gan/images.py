"""Image grids for people to look at: generated vs real, before vs after pruning, strips."""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw

_GAP = 12
_TITLE = 16


def grid_tensor(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """Images in [-1, 1], (N, C, H, W) -> one (3, H', W') grid in [0, 1], as torchvision's
    ``make_grid(images, nrow, padding, normalize=True, value_range=(-1, 1))`` makes it (tests/test_images.py
    holds it to that). Written here because importing torchvision costs a sweep trial's worker a second
    (it imports torch._dynamo) and a trial needs nothing else from it."""
    x = images.detach().float().cpu().clamp(-1, 1).add(1).div(2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    grid = torch.zeros(3, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        top, left = (i // cols) * (h + padding) + padding, (i % cols) * (w + padding) + padding
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def to_pil_grid(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """Images in [-1, 1], (N, C, H, W) -> one RGB grid image."""
    array = grid_tensor(images, nrow).mul(255).add_(0.5).clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
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
