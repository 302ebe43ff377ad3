"""The frozen-feature pass: every clip of a clip dataset through the frozen CLIP a HESP model was built on (no visual
prompt, frame features averaged). One floor below the rooms that read it: the prototype head's fallback space
(`training/prototypes.py`) and the baselines (`evaluation/baselines.py`)."""

from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..modeling.modeling_hesp import HESPForOpenSetVideoClassification
from .dataset import collate_clips


def frozen_clip_features(model: HESPForOpenSetVideoClassification, pixel_values_videos: torch.Tensor) -> torch.Tensor:
    """`(B, D)`: the clip features the baselines score, from the frozen CLIP the model was built on: every frame of
    `(B, T, C, H, W)` through the image tower as CLIP has it (no visual prompt), L2-normalised, averaged over frames."""
    with torch.no_grad():
        return model.frozen_video_embeds(pixel_values_videos.to(model.device)).float()


def dataset_features(
    model: HESPForOpenSetVideoClassification, dataset: Any, batch_size: int = 32, num_workers: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """`frozen_clip_features` `(N, D)` and labels `(N,)` of every clip of a clip dataset (`hesp_hf.data.clip_dataset`;
    skipped clips are left out); the model runs in eval mode and is left in the mode it had."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_clips, num_workers=num_workers)
    features, labels = [], []
    was_training = model.training
    model.eval()
    try:
        for batch in loader:
            if len(batch["labels"]) == 0:  # every clip of the batch was skipped
                continue
            features.append(frozen_clip_features(model, batch["pixel_values_videos"]).cpu().numpy())
            labels.append(batch["labels"].cpu().numpy())
    finally:
        model.train(was_training)
    if not features:
        raise ValueError("No readable clip in the dataset to compute baseline features from.")
    return np.concatenate(features), np.concatenate(labels)
