"""Training augmentation drawn once per clip and applied to all its frames (hesp-method.md §2.2): a horizontal flip
and a random resized crop, on uint8 frames before the processor's normalisation."""

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF


@dataclass
class ClipAugmentation:
    """`size`: output `(height, width)`; `scale` / `ratio`: area share and aspect range of the crop (the released
    code's 0.08-1.0 and 3/4-4/3); `flip_probability`: chance of a horizontal flip."""

    size: tuple[int, int]
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5

    def __call__(self, frames: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """`frames` `(T, H, W, 3)` uint8 -> `(T, 3, size[0], size[1])` uint8, one draw for the whole clip."""
        video = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W)
        if torch.rand((), generator=generator) < self.flip_probability:
            video = video.flip(-1)
        top, left, height, width = self._crop_box(video.shape[-2], video.shape[-1], generator)
        return TF.resized_crop(video, top, left, height, width, list(self.size), antialias=True)

    def _crop_box(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop box rule, drawn from `generator` so a seed reproduces it."""
        if generator is None:
            return RandomResizedCrop.get_params(torch.empty(1, height, width), list(self.scale), list(self.ratio))
        area = height * width
        log_ratio = torch.log(torch.tensor(self.ratio))
        for _ in range(10):
            target = area * torch.empty(1).uniform_(*self.scale, generator=generator).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
            w, h = int(round((target * aspect) ** 0.5)), int(round((target / aspect) ** 0.5))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
                return top, left, h, w
        side = min(height, width)  # fallback: the central square
        return (height - side) // 2, (width - side) // 2, side, side
