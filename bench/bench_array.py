"""Neuron core array: cycles, synaptic operations and lane utilization of the layer engine.

A 64-128-10 layer pair (w_bits 4, v_bits 12, T = 8) runs random input spike trains at 10, 30 and
50 % density on P = 4, 8, 16, 32 lanes. Each layer is one
:class:`spikeforge.hw.layer.LayerEngine`; layer 2 takes layer 1's output spikes (from the golden
model). Cycles come from the cycle model (:mod:`spikeforge.sim.cycle_model`), which the cocotb
regression checks cycle-exactly against the RTL on every case; ``--verify`` re-checks some of
the table's points on Verilator.

utilization = synaptic operations / (P * cycles). The 64-128 layer's width is a multiple of
every P here; the 128-10 layer's is not (10 neurons on 16 or 32 lanes leave lanes idle).

Then the Verilator simulation speed: simulated clock cycles per wall-clock second of the cocotb
regression testbench (driver, monitors and scoreboard included) on one build.

    python -m bench array [--samples 20] [--no-verilator] [--verify]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from rich.console import Console
from rich.table import Table

from spikeforge.sim.cycle_model import layer_schedule
from spikeforge.sw.golden import DenseLayer

LANES = (4, 8, 16, 32)
DENSITIES = (0.1, 0.3, 0.5)
TIMESTEPS = 8


def make_pair(seed: int = 0) -> tuple[DenseLayer, DenseLayer]:
    """The 64-128-10 pair: random 4-bit weights, thresholds that keep layer 1 at a few tens of
    percent activity."""
    gen = torch.Generator().manual_seed(seed)
    fc1 = DenseLayer(weight=torch.randint(-8, 8, (128, 64), generator=gen),
                     bias=torch.zeros(128, dtype=torch.int64), theta=[20] * TIMESTEPS,
                     w_bits=4, v_bits=12, name="fc1")
    fc2 = DenseLayer(weight=torch.randint(-8, 8, (10, 128), generator=gen),
                     bias=torch.zeros(10, dtype=torch.int64), theta=[16] * TIMESTEPS,
                     w_bits=4, v_bits=12, name="fc2")
    return fc1, fc2


def measure(pair, density: float, lanes: int, samples: int, seed: int = 1) -> dict:
    """Mean cycles, synops and utilization per layer and for the pair run one after the other."""
    gen = torch.Generator().manual_seed(seed)
    fc1, fc2 = pair
    totals = {"c1": 0, "s1": 0, "c2": 0, "s2": 0, "hidden": 0}
    for _ in range(samples):
        s_in = (torch.rand((TIMESTEPS, fc1.fan_in), generator=gen) < density).long()
        hidden = fc1.run(s_in[None])[0][0]
        out = fc2.run(hidden[None])[0][0]
        totals["c1"] += layer_schedule(fc1, s_in, lanes, output_spikes=hidden).cycles
        totals["c2"] += layer_schedule(fc2, hidden, lanes, output_spikes=out).cycles
        totals["s1"] += int(s_in.sum()) * fc1.fan_out
        totals["s2"] += int(hidden.sum()) * fc2.fan_out
        totals["hidden"] += int(hidden.sum())
    mean = {k: v / samples for k, v in totals.items()}
    mean["u1"] = mean["s1"] / (lanes * mean["c1"])
    mean["u2"] = mean["s2"] / (lanes * mean["c2"])
    mean["cycles"] = mean["c1"] + mean["c2"]
    mean["synops"] = mean["s1"] + mean["s2"]
    mean["u"] = mean["synops"] / (lanes * mean["cycles"])
    return mean


def _regression(built, config, seed: int, cases: int) -> dict:
    """The cocotb random regression on ``built`` (plan computed here, as the tests do)."""
    import tempfile
    from pathlib import Path

    from spikeforge.sim import runner
    from spikeforge.sim.layer_cases import regression_plan

    with tempfile.TemporaryDirectory() as folder:
        plan = Path(folder) / "plan.json"
        plan.write_text(json.dumps(regression_plan(config, seed, list(range(cases)))))
        return runner.run_tests(built, "spikeforge.sim.tb_layer",
                                testcase="random_regression", env={
            "SPIKEFORGE_TB_CONFIG": json.dumps(config.as_dict()),
            "SPIKEFORGE_SEED": str(seed), "SPIKEFORGE_TB_PLAN": str(plan)})


def verilator_speed(cases: int = 40) -> dict:
    """Run the cocotb regression on one 64-128 build and time it."""
    from spikeforge.sim import runner
    from spikeforge.sim.layer_cases import EngineConfig

    config = EngineConfig(8, 64, 128, TIMESTEPS, 4, 12)
    start = time.perf_counter()
    built = runner.build(config.component(), "layer_engine")
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    report = _regression(built, config, 7, cases)
    wall = time.perf_counter() - start
    result = report["tests"]["random_regression"]
    return {"config": config.name, "build_s": build_s, "wall_s": wall,
            "sim_cycles": result["sim_cycles"], "inference_cycles": result["cycles"],
            "cases": result["cases"], "run_s": result["run_s"]}


def verify_points(pair, samples: int = 3) -> list[str]:
    """Run some of the table's points on Verilator: RTL cycles == cycle model, spikes equal."""
    from spikeforge.sim import runner
    from spikeforge.sim.layer_cases import EngineConfig

    lines = []
    for lanes in (8, 32):
        config = EngineConfig(lanes, 64, 128, TIMESTEPS, 4, 12)
        built = runner.build(config.component(), "layer_engine")
        report = _regression(built, config, 3, samples)
        lines.append(f"P={lanes}: {report['tests']['random_regression']['cases']} random "
                     "64-128 cases cycle-exact on Verilator")
    return lines


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench array", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--samples", type=int, default=20, help="spike trains per point")
    parser.add_argument("--no-verilator", action="store_true", help="skip the simulation speed")
    parser.add_argument("--verify", action="store_true", help="re-check points on Verilator")
    args = parser.parse_args(argv)

    pair = make_pair()
    console = Console(width=max(Console().width, 132))
    table = Table(title=f"Layer engine, 64-128-10, T = {TIMESTEPS}, mean of {args.samples} "
                        "random spike trains (cycles per inference)")
    for column in ("density", "P", "L1 cycles", "L1 synops", "L1 util", "L2 cycles",
                   "L2 synops", "L2 util", "pair cycles", "pair util", "hidden spikes"):
        table.add_column(column, justify="right")
    for density in DENSITIES:
        for lanes in LANES:
            r = measure(pair, density, lanes, args.samples)
            table.add_row(f"{density:.0%}", str(lanes), f"{r['c1']:.0f}", f"{r['s1']:.0f}",
                          f"{r['u1']:.2f}", f"{r['c2']:.0f}", f"{r['s2']:.0f}", f"{r['u2']:.2f}",
                          f"{r['cycles']:.0f}", f"{r['u']:.2f}", f"{r['hidden']:.0f}")
        table.add_section()
    console.print(table)
    console.print("L1 = 64->128 (width a multiple of every P), L2 = 128->10. util = synops / "
                  "(P * cycles). 'pair' runs L1 then L2 back to back.")
    if args.verify:
        for line in verify_points(pair):
            console.print(line)
    if not args.no_verilator:
        from spikeforge.sim.toolchain import have_verilator

        if not have_verilator():
            console.print("Verilator not installed: simulation speed skipped")
            return
        s = verilator_speed()
        console.print(
            f"Verilator + cocotb regression speed on {s['config']}: {s['sim_cycles']} simulated "
            f"cycles ({s['cases']} cases, {s['inference_cycles']} of them inside inferences) in "
            f"{s['run_s']:.1f} s of test time = {s['sim_cycles'] / s['run_s']:,.0f} cycles/s "
            f"({s['wall_s']:.1f} s wall with simulator start; build {s['build_s']:.1f} s, "
            "cached after the first run)")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
