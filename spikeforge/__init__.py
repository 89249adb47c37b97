"""spikeforge: spiking neural networks from training to an FPGA bitstream, bit-exact at every step.

The package is layered; each layer imports only from the layers below it (``docs/layers.md``,
checked by ``make lint``)::

    applications  spikeforge.cli, spikeforge.sw.{train, export, simulate, synth, link, ...}
    simulation    spikeforge.sim         cycle models, cocotb testbenches, Verilator runner
    gateware      spikeforge.hw          Amaranth components and board tops
    contract      spikeforge.sw.golden, spikeforge.sw.interface, spikeforge._version

The names below are the public API, for notebooks and scripts::

    import spikeforge as sf
    network = sf.load("out/export")             # the integer golden Network of an export
    sf.export(network, "out/copy", lanes=8)     # weight ROMs + manifest
    network, report = sf.from_nir("model.nir")  # a NIR graph (snnTorch, sinabs, ...)
    graph = sf.to_nir(network)                  # and back (docs/nir.md)
    network, report = sf.from_torch(module)     # a torch nn.Sequential (ReLU or spiking)
    report = sf.evaluate("out/export", pixels, labels)           # on the golden model
    summary = sf.simulate("out/export", pixels=..., labels=...)   # on the RTL (Verilator)

They are imported on first use, so ``import spikeforge`` stays cheap and a cocotb testbench that
imports one submodule does not load PyTorch's training stack.
"""

from __future__ import annotations

import importlib

from spikeforge._version import __version__

#: public name -> (module, attribute)
_API = {
    "ContractError": ("spikeforge.sw.golden", "ContractError"),
    "DenseLayer": ("spikeforge.sw.golden", "DenseLayer"),
    "ConvLayer": ("spikeforge.sw.golden", "ConvLayer"),
    "SumPoolLayer": ("spikeforge.sw.golden", "SumPoolLayer"),
    "Encoder": ("spikeforge.sw.golden", "Encoder"),
    "Network": ("spikeforge.sw.golden", "Network"),
    "train": ("spikeforge.sw.train", "train"),
    "TrainConfig": ("spikeforge.sw.train", "TrainConfig"),
    "load_checkpoint": ("spikeforge.sw.train", "load_checkpoint"),
    "integer_network": ("spikeforge.sw.train", "integer_network"),
    "export": ("spikeforge.sw.export", "export_network"),
    "load": ("spikeforge.sw.export", "load_network"),
    "load_manifest": ("spikeforge.sw.export", "load_manifest"),
    "from_nir": ("spikeforge.sw.nir", "from_nir"),
    "to_nir": ("spikeforge.sw.nir", "to_nir"),
    "from_torch": ("spikeforge.sw.torch_import", "from_torch"),
    "evaluate": ("spikeforge.sw.evaluate", "evaluate_export"),
    "simulate": ("spikeforge.sw.simulate", "simulate_export"),
    "synthesize": ("spikeforge.sw.synth", "synthesize"),
    "check_fit": ("spikeforge.sw.synth", "check_fit"),
    "load_dataset": ("spikeforge.sw.data", "load_dataset"),
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'spikeforge' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
