"""Host link: the fault campaign's throughput and counts, and what the line carries.

* The fault campaign of issue 14 (sim/link_campaign.py, sim/tb_link.py): ``--frames``
  malformed frames (default 100,000) against the gateware bridge on the RTL simulator, each
  compared with the Python model of the bridge; prints the counts per fault kind and outcome,
  bursts and malformed frames per second, and the seed (``SPIKEFORGE_SEED=<seed>`` replays it).
* The line at the spec's rate (``BAUD``, spikeforge.sw.interface) on each board: the UART
  divisor, the transmitter's rate error, the receiver's window (spikeforge.hw.uart.rx_tolerance)
  and the images per second one RUN exchange per image allows.

    python -m bench link                      # 100,000 frames (about 2 minutes on Verilator)
    python -m bench link --frames 5000 --sim icarus
    SPIKEFORGE_SEED=123 python -m bench link --frames 20000
"""

from __future__ import annotations

import argparse
import os
import random

from rich.console import Console
from rich.table import Table

#: (name, n_inputs, pixel_bits, n_outputs) of the images whose link ceiling is printed.
#: A pixel takes a byte up to 8 bits (docs/link-protocol.md), so 4-bit MNIST costs the same.
IMAGES = (("MNIST 784 x 8-bit", 784, 8, 10), ("digits 64 x 4-bit", 64, 4, 10))


def line_table() -> Table:
    from spikeforge.hw.boards import BOARDS, BoardTop
    from spikeforge.hw.uart import rx_tolerance
    from spikeforge.sim.mock_accelerator import MockAccelerator
    from spikeforge.sw.interface import BAUD

    table = Table(title=f"UART at {BAUD:,} baud (spikeforge.sw.interface.BAUD)")
    for column in ("board", "clock MHz", "divisor", "tx rate", "tx error", "rx reads"):
        table.add_column(column, justify="right")
    for board in BOARDS:
        top = BoardTop(board, lambda: MockAccelerator())
        rate = top.clock_hz / top.divisor
        slowest, fastest = rx_tolerance(top.divisor, top.clock_hz)
        table.add_row(board, f"{top.clock_hz / 1e6:g}", str(top.divisor), f"{rate:,.0f}",
                      f"{(rate / BAUD - 1) * 100:+.2f} %",
                      f"{(slowest / BAUD - 1) * 100:+.1f} % .. {(fastest / BAUD - 1) * 100:+.1f} %")
    return table


def ceiling_table() -> Table:
    from spikeforge.sw.interface import BAUD, link_images_per_second, run_frame_bytes

    table = Table(title="Images/s the line carries: one RUN request and reply per image")
    for column in ("image", "request B", "reply B", f"{BAUD:,} baud", "115,200 baud"):
        table.add_column(column, justify="right")
    for name, n_inputs, pixel_bits, n_outputs in IMAGES:
        shape = {"n_inputs": n_inputs, "pixel_bits": pixel_bits, "n_outputs": n_outputs}
        request, reply = run_frame_bytes(**shape)
        table.add_row(name, str(request), str(reply), f"{link_images_per_second(**shape):.1f}",
                      f"{link_images_per_second(**shape, baud=115200):.1f}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="malformed frames")
    parser.add_argument("--seed", type=int, default=None,
                        help="campaign seed (default $SPIKEFORGE_SEED, else a fresh one)")
    parser.add_argument("--sim", default=None, help="verilator or icarus ($SPIKEFORGE_SIM)")
    parser.add_argument("--no-campaign", action="store_true", help="only the line tables")
    args = parser.parse_args(argv)
    console = Console()
    console.print(line_table())
    console.print(ceiling_table())
    if args.no_campaign:
        return

    from spikeforge.sim.link_campaign import outcome_table, run_campaign

    seed = args.seed
    if seed is None:
        seed = int(os.environ.get("SPIKEFORGE_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"link fault campaign: {args.frames} malformed frames, seed {seed} "
          f"(replay: SPIKEFORGE_SEED={seed} python -m bench link --frames {args.frames})",
          flush=True)
    result = run_campaign(args.frames, seed, sim=args.sim)
    print(result.summary())
    print(outcome_table(result.counts))
    per_second = result.malformed / result.seconds
    print(f"{result.frames_per_second:.0f} bursts/s, {per_second:.0f} malformed frames/s: "
          f"100,000 malformed frames take {100_000 / per_second:.0f} s on {result.simulator} "
          f"({result.cycles / result.bursts:.0f} simulated cycles a burst)")
    if result.malformed_writes:
        print(f"{result.malformed_writes} malformed frames wrote registers (the model agrees: "
              f"their bytes made a frame with a good CRC)")
