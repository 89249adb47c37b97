"""Host link: the fault campaign's throughput and counts, and what the line carries.

* The fault campaign of issue 14 (sim/link_campaign.py, sim/tb_link.py): ``--frames``
  malformed frames (default 100,000) against the gateware bridge on the RTL simulator, each
  compared with the Python model of the bridge; prints the counts per fault kind and outcome,
  bursts and malformed frames per second, and the seed (``SPIKEFORGE_SEED=<seed>`` replays it).
* The line at the spec's rate (``BAUD``, spikeforge.sw.interface) on each board: the UART
  divisor, the transmitter's rate error, the receiver's window (spikeforge.hw.uart.rx_tolerance)
  and the images per second one RUN exchange per image allows.
* Throughput in the board simulation (``--throughput``): the board top (UART, bridge,
  accelerator of 784-128-10 trained on mnist5k, T = 2) in Verilator at each board's clock,
  lanes and UART divisor, the weights loaded over the link, then ``--images`` real test images
  streamed by the real client exactly as ``spikeforge run`` sends them (STREAM: zero-run
  tokens, each reply the previous image's results, so the board computes while the line
  carries the next). Images per second of simulated time, beside the line's own ceiling for
  STREAM and for RUN, and every result checked against the golden model.

    python -m bench link                      # 100,000 frames (about 2 minutes on Verilator)
    python -m bench link --no-campaign --throughput --images 100
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


#: Boards of the throughput run: lanes, clock (MHz) and weight store of their 784-128-10 builds
#: (docs/synthesis.md: the ULX3S's 32-lane build meets timing at 79.2 MHz).
THROUGHPUT_BOARDS = {"icebreaker": (4, 30.0, "spram"), "ulx3s": (32, 79.2, "rom")}


def throughput_table(n_images: int, boards=tuple(THROUGHPUT_BOARDS)) -> Table:
    import tempfile

    import torch

    from bench.bench_synth import mnist_network
    from spikeforge.hw.uart import uart_divisor
    from spikeforge.sw.export import export_network
    from spikeforge.sw.interface import (
        BAUD,
        link_images_per_second,
        stream_frame_bytes,
        stream_images_per_second,
    )
    from spikeforge.sw.simulate import build_link, simulate_link

    network, images = mnist_network(2)
    # evenly spaced over the test set: it is in class order, and a 0 takes more tokens than a 1
    stride = max(1, len(images) // n_images)
    images = images[::stride][:n_images]
    golden = network.run(torch.as_tensor(images, dtype=torch.int64))
    pixel_bits, n_out = network.encoder.pixel_bits, network.n_outputs
    image_lists = images.tolist()
    frames = [stream_frame_bytes(image, pixel_bits=pixel_bits, n_outputs=n_out)
              for image in image_lists]
    request = sum(f[0] for f in frames) / len(frames)
    reply = frames[0][1]
    run_max = link_images_per_second(n_inputs=network.n_inputs, pixel_bits=pixel_bits,
                                     n_outputs=n_out)
    table = Table(title=f"Images/s through the link in the board simulation: 784-128-10, "
                        f"mnist5k, T = 2, {len(images)} test images (every "
                        f"{stride}th), {BAUD:,} baud")
    for column in ("board", "lanes", "MHz", "divisor", "STREAM B out/back",
                   "line max STREAM", "line max RUN", "simulated img/s", "RTL = golden"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory(prefix="spikeforge-throughput-") as tmp:
        for board in boards:
            lanes, clock_mhz, store = THROUGHPUT_BOARDS[board]
            divisor = uart_divisor(clock_mhz * 1e6, BAUD)
            folder = export_network(network, f"{tmp}/{board}", lanes=lanes)
            print(f"{board}: {lanes} lanes at {clock_mhz} MHz, weights in {store}, UART divisor "
                  f"{divisor}: building, then streaming {len(images)} images", flush=True)
            built = build_link(network, lanes, divisor=divisor, spram=store == "spram")
            report = simulate_link(folder, network, lanes, images, stream=True, divisor=divisor,
                                   built=built,
                                   clock_ns=round(500 / clock_mhz, 3) * 2,  # even ps
                                   progress=lambda done: print(f"  {done} images", flush=True))
            results = report["results"]
            agree = sum(r["prediction"] == int(p) and r["scores"] == o.tolist()
                        for r, p, o in zip(results, golden.prediction, golden.output,
                                           strict=True))
            rate = len(results) / (report["stream_sim_ns"] * 1e-9)
            # the line runs at the UART's own rate: clock / divisor, not exactly BAUD
            stream_max = stream_images_per_second(image_lists, pixel_bits=pixel_bits,
                                                  n_outputs=n_out, baud=clock_mhz * 1e6 / divisor)
            print(f"{board}: {rate:,.0f} images/s simulated, {agree}/{len(results)} = golden",
                  flush=True)
            table.add_row(board, str(lanes), f"{clock_mhz:g}", str(divisor),
                          f"{request:.0f} / {reply}", f"{stream_max:,.0f}",
                          f"{run_max:,.0f}", f"{rate:,.0f}",
                          f"{agree} / {len(results)}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000, help="malformed frames")
    parser.add_argument("--seed", type=int, default=None,
                        help="campaign seed (default $SPIKEFORGE_SEED, else a fresh one)")
    parser.add_argument("--sim", default=None, help="verilator or icarus ($SPIKEFORGE_SIM)")
    parser.add_argument("--no-campaign", action="store_true", help="only the line tables")
    parser.add_argument("--throughput", action="store_true",
                        help="images/s through the link in the board simulation")
    parser.add_argument("--images", type=int, default=100, help="images of the throughput run")
    parser.add_argument("--boards", nargs="+", default=list(THROUGHPUT_BOARDS),
                        choices=list(THROUGHPUT_BOARDS), help="boards of the throughput run")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 120))
    console.print(line_table())
    console.print(ceiling_table())
    if args.throughput:
        console.print(throughput_table(args.images, tuple(args.boards)))
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
