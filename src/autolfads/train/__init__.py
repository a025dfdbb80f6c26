"""Training: objective, population optimizer, metrics, the Trainer loop, checkpoints and runs on disk."""

from .run import TrainResult, load_run_data, sample, train
from .trainer import Trainer

__all__ = ["TrainResult", "Trainer", "load_run_data", "sample", "train"]
