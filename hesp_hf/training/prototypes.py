"""Fitting the prototype head after training: per known class, the mean embedding of its training clips, in the
space whose prototypes classify the known training clips better (`HESPConfig.prototype_space`): the trained video
embedding, or the frozen CLIP's frame-mean feature where the training clearly went wrong."""

import logging
from typing import Any

import torch
import torch.nn.functional as F

from ..data.features import dataset_features
from ..modeling.modeling_hesp import HESPVideoClassifierOutput
from .trainer import HESPTrainer


logger = logging.getLogger(__name__)

# How much better (leave-one-out accuracy on the known training clips) the frozen features' prototypes must classify
# than the trained embedding's for the head to fall back to them: a training that went wrong shows gaps of 0.14-0.30
# on the synthetic protocol, a good one differences of a clip or two either way (docs/open-set-quality.md).
FALLBACK_MARGIN = 0.05


def leave_one_out_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest-class-prototype accuracy `(N, D)` / `(N,)` with each clip left out of its own class's prototype
    (prototypes: normalised means of L2-normalised features; a class with one clip has no prototype for it)."""
    unit = F.normalize(features.double(), dim=-1)
    labels = labels.long()
    num_classes = int(labels.max()) + 1
    sums = torch.zeros(num_classes, unit.shape[1], dtype=unit.dtype).index_add_(0, labels, unit)
    counts = torch.bincount(labels, minlength=num_classes).to(unit.dtype)
    cosines = unit @ F.normalize(sums / counts[:, None].clamp(min=1), dim=-1).T  # (N, K), own class not yet left out
    own_sum = sums[labels] - unit  # (N, D): the own class without the clip
    own = (unit * F.normalize(own_sum, dim=-1)).sum(dim=-1)
    own[counts[labels] < 2] = -float("inf")
    cosines[torch.arange(len(labels)), labels] = own
    return float((cosines.argmax(dim=-1) == labels).double().mean())


def choose_prototype_space(
    trained: torch.Tensor, frozen: torch.Tensor, labels: torch.Tensor, margin: float = FALLBACK_MARGIN
) -> tuple[str, dict]:
    """`"trained"` unless the frozen features' prototypes classify the clips better by more than `margin`
    (leave-one-out accuracy); with both accuracies."""
    accuracy = {"trained": leave_one_out_accuracy(trained, labels), "frozen": leave_one_out_accuracy(frozen, labels)}
    return ("frozen" if accuracy["frozen"] > accuracy["trained"] + margin else "trained"), accuracy


def fit_class_prototypes(
    trainer: HESPTrainer, dataset: Any, frozen_features: tuple[Any, Any] | None = None
) -> dict[str, float]:
    """Fit `trainer.model`'s prototype head on `dataset` (known training clips, with the evaluation transform: no
    augmentation), in the space `choose_prototype_space` picks, and switch the model to predict with it
    (`config.inference_logits = "prototypes"`). Returns the leave-one-out accuracy of each space.

    The trained embeddings come through `Trainer.predict`, gathered over every process of a distributed run (batches
    whose clips were all skipped keep the processes in step); the frozen features (`dataset_features` of the same
    dataset, computed here when not given) are whole on every process, so all of them choose alike."""
    keep = {"video_embeds"}
    ignore = [name for name in HESPVideoClassifierOutput.__dataclass_fields__ if name not in keep]
    compute_metrics, trainer.compute_metrics = trainer.compute_metrics, None  # no logits here to score
    try:
        output = trainer.predict(dataset, ignore_keys=ignore, metric_key_prefix="prototypes")
    finally:
        trainer.compute_metrics = compute_metrics
    trained = torch.as_tensor(output.predictions["video_embeds"]).float()
    labels = torch.as_tensor(output.label_ids).long()
    model = trainer.model
    if frozen_features is None:
        batching = (trainer.args.per_device_eval_batch_size, trainer.args.dataloader_num_workers)
        frozen_features = dataset_features(model, dataset, *batching)
    frozen, frozen_labels = frozen_features
    if not torch.equal(torch.as_tensor(frozen_labels).long(), labels):
        raise RuntimeError("The trained and the frozen features of the training clips came in different orders.")
    space, accuracy = choose_prototype_space(trained, torch.as_tensor(frozen), labels)
    model.set_class_prototypes(trained if space == "trained" else torch.as_tensor(frozen), labels)
    model.config.prototype_space = space
    model.config.inference_logits = "prototypes"
    logger.info(
        "Prototype head fitted on %d training clips in the %s space (leave-one-out accuracy: trained %.3f, frozen "
        "%.3f).",
        len(labels),
        space,
        accuracy["trained"],
        accuracy["frozen"],
    )
    return accuracy
