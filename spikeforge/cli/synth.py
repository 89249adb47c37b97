"""``spikeforge synth EXPORT_DIR --board icebreaker|ulx3s``: fit check, bitstream, report.

:func:`spikeforge.sw.synth.synthesize` does the work (:func:`~spikeforge.sw.synth.check_export_fit`
alone with ``--check-only``); the memory plan and the build's progress go to stderr, the report
to stdout.

Exit status: 0 bitstream written and timing met (at the requested clock, or at the lower clock
of a rebuild); 2 timing not met (the bitstream is renamed ``*.timing-failed``); 1 refused
(the network does not fit, a bad export, a tool failed).
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from spikeforge.sw.export import ExportError
from spikeforge.sw.synth import SynthError, check_export_fit, synthesize

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("export_dir", metavar="EXPORT_DIR",
                        help="folder written by `spikeforge export`")
    parser.add_argument("--board", required=True, choices=("icebreaker", "ulx3s"))
    parser.add_argument("--out", default=None,
                        help="build folder (default: EXPORT_DIR/../synth-BOARD)")
    parser.add_argument("--clock-mhz", type=float, default=None,
                        help="PLL target and timing requirement (default: constraints/BOARD.toml);"
                             " a build that misses it is rebuilt (at most twice) at the clock "
                             "it reaches")
    parser.add_argument("--insist-clock", action="store_true",
                        help="do not lower the clock when timing is missed (exit 2, and the "
                             "bitstream is renamed *.timing-failed)")
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


def _print_plan(plan) -> None:
    print(f"memory plan for {plan.device}:", file=sys.stderr)
    for line in plan.lines():
        print(f"  {line}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    def fail(message: str) -> int:
        print(f"spikeforge synth: error: {message}", file=sys.stderr)
        return 1

    if args.lanes is not None and args.lanes < 1:
        return fail(f"--lanes must be positive, not {args.lanes}")
    options = dict(clock_mhz=args.clock_mhz, lanes=args.lanes)
    try:
        if args.check_only:
            _print_plan(check_export_fit(args.export_dir, args.board, **options))
            return 0
        console = Console(stderr=True)
        with console.status(f"building for {args.board}") as status:
            def progress(message: str) -> None:
                if message.endswith((" s", "with ABC")) or message.startswith("timing missed"):
                    console.log(message)
                else:
                    status.update(f"{args.board}: {message[:100]}")

            report = synthesize(args.export_dir, args.board, args.out, mock=args.mock,
                                seed=args.seed, progress=progress, on_plan=_print_plan,
                                insist_clock=args.insist_clock, **options)
    except (ExportError, OSError, ValueError, SynthError) as error:
        return fail(str(error))
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format())
    return 0 if report.timing_met else 2
