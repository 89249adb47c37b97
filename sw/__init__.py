"""spikeforge software side: the integer golden model, training, quantization and export."""

__version__ = "0.1.0"
