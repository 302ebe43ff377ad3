"""Fitting the prototype head after training: the trained model's video embeddings of the known training clips,
averaged per class (`HESPForOpenSetVideoClassification.set_class_prototypes`)."""

import logging
from typing import Any

import torch

from ..modeling.modeling_hesp import HESPVideoClassifierOutput
from .trainer import HESPTrainer


logger = logging.getLogger(__name__)


def fit_class_prototypes(trainer: HESPTrainer, dataset: Any) -> None:
    """Fit `trainer.model`'s class prototypes on `dataset` (known training clips, with the evaluation transform: no
    augmentation) and switch the model to predict with them (`config.inference_logits = "prototypes"`).

    The embeddings come through `Trainer.predict`, so they are gathered over every process of a distributed run and
    batches whose clips were all skipped keep the processes in step; only `video_embeds` is gathered."""
    keep = {"video_embeds"}
    ignore = [name for name in HESPVideoClassifierOutput.__dataclass_fields__ if name not in keep]
    compute_metrics, trainer.compute_metrics = trainer.compute_metrics, None  # no logits here to score
    try:
        output = trainer.predict(dataset, ignore_keys=ignore, metric_key_prefix="prototypes")
    finally:
        trainer.compute_metrics = compute_metrics
    embeds = torch.as_tensor(output.predictions["video_embeds"])
    labels = torch.as_tensor(output.label_ids)
    model = trainer.model
    model.set_class_prototypes(embeds, labels)
    model.config.inference_logits = "prototypes"
    logger.info(
        "Prototype head fitted on %d training clips of %d known classes.", len(labels), len(model.class_prototypes)
    )
