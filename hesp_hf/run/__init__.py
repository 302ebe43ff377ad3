"""One training run as a library call: typed options (`arguments`), then `train` / `run`."""

from .train import TrainingRun, run, run_training, train


__all__ = ["TrainingRun", "run", "run_training", "train"]
