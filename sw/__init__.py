"""spikeforge software side: the integer golden model, training, quantization and export."""
