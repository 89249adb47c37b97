"""Training and quantization: the seeds' neurons and methods, ending in the integer model.

Public API::

    train(config=None, out=None, resume=False, progress=None) -> Path
    run_training(config=None, out=None, resume=False, progress=None) -> (SpikingNet, Checkpoint)
    load_checkpoint(path) -> Checkpoint
    integer_network(checkpoint_or_path) -> spikeforge.sw.golden.Network
    TrainConfig, METHODS, PRESETS, Checkpoint, CheckpointError, ConfigError, QuantizationError

Architectures (``TrainConfig.arch``) are presets or specs such as ``c8k3p1-p2-c16k3p1-p2-f10``
(:mod:`spikeforge.sw.train.arch`). See docs/training.md.
"""

from .arch import PRESETS, parse_arch, resolve_arch
from .checkpoint import Checkpoint, CheckpointError, integer_network, load_checkpoint
from .config import METHODS, ConfigError, TrainConfig, load_config
from .loop import default_checkpoint, evaluate, load_data, run_training, train, train_baseline
from .model import QuantizationError, SpikingMLP, SpikingNet

__all__ = [
    "train", "load_checkpoint", "integer_network", "TrainConfig", "load_config", "METHODS",
    "PRESETS", "Checkpoint", "CheckpointError", "ConfigError", "QuantizationError",
    "SpikingNet", "SpikingMLP", "evaluate", "load_data", "default_checkpoint", "run_training",
    "train_baseline", "parse_arch", "resolve_arch",
]
