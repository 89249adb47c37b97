"""Training and quantization: the seeds' neurons and methods, ending in the integer model.

Public API::

    train(config=None, out=None, resume=False, progress=None) -> Path
    run_training(config=None, out=None, resume=False, progress=None) -> (SpikingMLP, Checkpoint)
    load_checkpoint(path) -> Checkpoint
    integer_network(checkpoint_or_path) -> sw.golden.Network
    TrainConfig, METHODS, Checkpoint, CheckpointError, ConfigError, QuantizationError

See docs/training.md.
"""

from .checkpoint import Checkpoint, CheckpointError, integer_network, load_checkpoint
from .config import METHODS, ConfigError, TrainConfig, load_config
from .loop import default_checkpoint, evaluate, load_data, run_training, train
from .model import QuantizationError, SpikingMLP

__all__ = [
    "train", "load_checkpoint", "integer_network", "TrainConfig", "load_config", "METHODS",
    "Checkpoint", "CheckpointError", "ConfigError", "QuantizationError", "SpikingMLP",
    "evaluate", "load_data", "default_checkpoint", "run_training",
]
