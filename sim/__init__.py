"""spikeforge simulation: cycle model, cocotb testbenches and the Verilator/Amaranth runners."""
