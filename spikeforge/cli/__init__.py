"""The ``spikeforge`` command line: one subcommand per step of the flow.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them together, so ``spikeforge --help`` shows the whole flow in order.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: name -> (module, one-line help), in the order a user meets them. Each module of this package
#: parses, validates and reports; the work is a library function in the application layer.
COMMANDS = {
    "demo": ("spikeforge.cli.demo", "train on digits, export, run the network on the RTL, report"),
    "train": ("spikeforge.cli.train", "train and quantize a spiking network"),
    "export": ("spikeforge.cli.export", "write weight ROMs and a manifest from a checkpoint"),
    "from-nir": ("spikeforge.cli.from_nir", "import a NIR graph (snnTorch, sinabs, ...) as an "
                                           "export"),
    "to-nir": ("spikeforge.cli.to_nir", "write an export as a NIR graph"),
    "eval": ("spikeforge.cli.eval", "accuracy, SynOps and spikes of an export on the golden model"),
    "rtl": ("spikeforge.cli.rtl", "generate Verilog for an exported network"),
    "sim": ("spikeforge.cli.sim", "run an exported network on the RTL in Verilator"),
    "synth": ("spikeforge.cli.synth", "build a bitstream for a board with yosys/nextpnr"),
    "run": ("spikeforge.cli.run", "classify images on a board over the UART link"),
}


def build_parser(available: dict[str, object]) -> argparse.ArgumentParser:
    from spikeforge._version import __version__

    parser = argparse.ArgumentParser(
        prog="spikeforge", description="Spiking neural networks from training to bitstream, "
                                       "bit-exact at every step.")
    parser.add_argument("--version", action="version", version=f"spikeforge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in available.items():
        command = sub.add_parser(name, help=COMMANDS[name][1], description=COMMANDS[name][1])
        module.add_arguments(command)
        command.set_defaults(handler=module.run)
    return parser


def _commands() -> dict[str, object]:
    return {name: importlib.import_module(module) for name, (module, _) in COMMANDS.items()}


def main(argv: list[str] | None = None) -> int:
    args = build_parser(_commands()).parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as error:  # a path the user gave: under a file, unwritable, missing
        where = f": {error.filename}" if error.filename else ""
        print(f"spikeforge {args.command}: error: {error.strerror or error}{where}",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
