"""spikeforge gateware (Amaranth HDL): neuron core array, layer engine, accelerator, board tops."""
