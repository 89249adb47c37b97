"""The demo network on the RTL: cycles, throughput, SynOps, utilization, agreement, sim speed.

Uses ``out/demo/checkpoint.pt`` (trained by ``make demo``; trained here if missing), exports it for
several lane counts, and runs the 360 digits test images on each build in Verilator.

    python -m bench network [--lanes 4 8 16] [--clock-mhz 48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

OUT = Path("out/bench/network")


def main(argv: list[str] | None = None) -> None:
    from spikeforge.sw.data import load_dataset
    from spikeforge.sw.demo import demo_config
    from spikeforge.sw.export import export_network
    from spikeforge.sw.simulate import simulate_export
    from spikeforge.sw.train import integer_network, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lanes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--clock-mhz", type=float, default=48.0,
                        help="clock for inferences/s (default 48 MHz; use the synthesized Fmax)")
    parser.add_argument("--checkpoint", type=Path, default=Path("out/demo/checkpoint.pt"))
    args = parser.parse_args(argv)
    console = Console(width=160)
    if not args.checkpoint.exists():
        console.print(f"{args.checkpoint} missing: training the demo network first")
        train(demo_config(), out=args.checkpoint)
    network = integer_network(args.checkpoint)
    pixels, labels = load_dataset("digits", split="test")

    shape = [network.n_inputs] + [layer.fan_out for layer in network.layers]
    table = Table(title=f"demo network {shape}"
                        f", T={network.timesteps}, digits test set (360 images) on the RTL")
    for column in ("P", "cycles/inf", f"inf/s @ {args.clock_mhz:g} MHz", "SynOps/inf",
                   "utilization", "RTL acc", "RTL = golden", "mismatches", "Verilator img/s",
                   "Verilator cycles/s"):
        table.add_column(column, justify="right")
    for lanes in args.lanes:
        export_dir = export_network(network, OUT / f"export-P{lanes}", lanes=lanes)
        s = simulate_export(export_dir, pixels=pixels, labels=labels, trace=0,
                            clock_mhz=args.clock_mhz, console=console)
        table.add_row(str(lanes), f"{s.cycles_mean:,.0f}", f"{s.inferences_per_second:,.0f}",
                      f"{s.synops_mean:,.0f}", f"{s.utilization:.3f}", f"{s.rtl_accuracy:.2%}",
                      f"{s.agreement:.2%}", str(s.mismatches), f"{s.images_per_wall_second:,.0f}",
                      f"{s.cycles_per_wall_second:,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
