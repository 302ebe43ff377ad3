"""Training augmentation drawn once per clip and applied to all its frames (the released code's training transform):
a horizontal flip and a random resized crop, on uint8 frames before the processor's normalisation."""

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
        """torchvision's RandomResizedCrop box, drawn from `generator` when given so that a seed reproduces it
        (torchvision draws from the global generator: it runs on a fork of it, seeded from `generator`)."""
        image = torch.empty(1, height, width)
        if generator is None:
            return RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
