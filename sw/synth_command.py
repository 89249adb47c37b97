"""``spikeforge synth EXPORT_DIR --board icebreaker|ulx3s``: fit check, bitstream, report.

Exit status: 0 bitstream written and timing met; 2 bitstream written but timing not met;
1 refused (the network does not fit, a bad export, a tool failed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_arguments", "run", "accelerator_factory"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", metavar="EXPORT_DIR",
                        help="folder written by `spikeforge export`")
    parser.add_argument("--board", required=True, choices=("icebreaker", "ulx3s"))
    parser.add_argument("--out", default=None,
                        help="build folder (default: EXPORT_DIR/../synth-BOARD)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="PLL target and timing requirement (default: constraints/BOARD.toml)")
    parser.add_argument("--lanes", type=int, default=None,
                        help="lanes per layer engine (default: the export's); fewer lanes take "
                             "fewer logic cells and the same ROM bits")
    parser.add_argument("--check-only", action="store_true",
                        help="run the memory fit check and stop before synthesis")
    parser.add_argument("--mock", action="store_true",
                        help="build the link with the mock accelerator sized like the network "
                             "(link bring-up without the real accelerator)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def accelerator_factory(folder: Path, manifest, *, mock: bool = False, lanes: int | None = None,
                        spram_layers=()):
    """A zero-argument callable returning a fresh accelerator for the export in ``folder``.

    The one place that knows how to construct the real ``NetworkAccelerator``;
    ``spram_layers`` are the layers whose weights the memory plan put in SPRAM.
    """
    if mock:
        from sim.mock_accelerator import MockAccelerator

        return lambda: MockAccelerator(
            n_inputs=manifest.layers[0].fan_in, n_outputs=manifest.layers[-1].fan_out,
            pixel_bits=manifest.encoder.pixel_bits, n_layers=len(manifest.layers),
            timesteps=manifest.timesteps)
    try:
        from hw.accelerator import NetworkAccelerator
    except ImportError as error:
        raise RuntimeError("hw.accelerator.NetworkAccelerator is not available "
                           f"({error}); use --mock to build the link alone") from error
    from sw.golden import EncoderKind

    network, lanes = manifest.network, lanes or manifest.lanes
    if network.encoder.kind is EncoderKind.DIRECT:
        raise RuntimeError("the network uses the direct (analog) encoder, which the hardware "
                           "does not implement; export it with the 'rate' or 'radix' encoder")
    return lambda: NetworkAccelerator(network, lanes, spram_layers=spram_layers)


def _console():
    try:
        from rich.console import Console

        return Console(stderr=True)
    except ImportError:  # pragma: no cover - rich is a dependency
        return None


def run(args: argparse.Namespace) -> int:
    from hw.boards import BoardTop, load_board_spec
    from sw.export import ExportError, load_manifest
    from sw.synth import FitError, NetworkShape, SynthError, build_bitstream, check_fit

    def fail(message: str) -> int:
        print(f"spikeforge synth: error: {message}", file=sys.stderr)
        return 1

    folder = Path(args.export_dir)
    try:
        manifest = load_manifest(folder)
    except (ExportError, OSError) as error:
        return fail(str(error))
    clock_hz = args.clock_mhz * 1e6 if args.clock_mhz else None
    try:
        spec = load_board_spec(args.board, clock_hz=clock_hz)
    except ValueError as error:
        return fail(str(error))
    shape = NetworkShape.from_manifest(manifest)
    if args.lanes is not None:
        if args.lanes < 1:
            return fail(f"--lanes must be positive, not {args.lanes}")
        shape = shape.with_(lanes=args.lanes)
    try:
        plan = check_fit(shape, spec)
    except FitError as error:
        return fail(str(error))
    print(f"memory plan for {spec.device}:", file=sys.stderr)
    for line in plan.lines():
        print(f"  {line}", file=sys.stderr)
    if args.check_only:
        return 0

    try:
        factory = accelerator_factory(folder, manifest, mock=args.mock, lanes=args.lanes,
                                      spram_layers=plan.spram_layers)
        top = BoardTop(args.board, factory, clock_hz=clock_hz)
    except (RuntimeError, ValueError, TypeError) as error:
        return fail(str(error))
    out = Path(args.out) if args.out else folder.resolve().parent / f"synth-{args.board}"
    console = _console()
    try:
        if console is not None:
            with console.status(f"building for {args.board}") as status:
                def progress(message):
                    if message.endswith(" s"):
                        console.log(message)
                    else:
                        status.update(f"{args.board}: {message[:100]}")
                report = build_bitstream(top, args.board, out, spec=spec, progress=progress,
                                         seed=args.seed)
        else:
            report = build_bitstream(top, args.board, out, spec=spec, seed=args.seed,
                                     progress=lambda m: print(m, file=sys.stderr))
    except (SynthError, ValueError) as error:
        return fail(str(error))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format())
    return 0 if report.timing_met else 2


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="spikeforge synth")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
