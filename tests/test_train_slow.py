"""Long training runs (``make test-long`` only): the default configuration's accuracy."""

import pytest

from spikeforge.sw.data import load_dataset
from spikeforge.sw.train import TrainConfig, integer_network, load_checkpoint, train


@pytest.mark.slow
def test_default_config_reaches_target(tmp_path):
    path = train(TrainConfig(), out=tmp_path / "default.pt")
    ckpt = load_checkpoint(path)
    x, y = load_dataset("digits", split="test")
    accuracy = float((integer_network(path).predict(x) == y).float().mean())
    assert accuracy == ckpt.metrics["test_int"]
    assert accuracy >= 0.95  # training time is measured in bench/, not asserted here
