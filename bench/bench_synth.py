"""Synthesis benchmark: per board, the demo-sized and an MNIST-sized network on the real
accelerator behind the UART link.

For each (network, board): the memory plan (spikeforge.sw.synth.plan_memories), then, when it
fits, a full yowasp build of the board top: logic and memory utilisation and Fmax from nextpnr's
report; cycles per inference from the accelerator's exact cycle model
(spikeforge.sim.network_model) averaged over images; inferences per second at the achieved Fmax;
and what the link allows at the spec's line rate (``BAUD``, 3 Mbaud).

    python -m bench synth                       # every case (tens of minutes on 2 cores)
    python -m bench.bench_synth --cases demo    # a subset
    python -m bench.bench_synth --boards ulx3s --cases mnist

Results go to ``out/bench/synth.json`` and ``out/bench/synth.md``.

Networks (every one trained, because cycles depend on the spike statistics; the checkpoints
are cached under ``out/bench``):

* ``demo``: the 64 -> 128 -> 10 IF network ``spikeforge demo`` trains on the digits data set,
  4-bit weights, rate-coded 4-bit pixels, T = 4; cycles over 64 digits test images.
* ``mnist``: 784 -> 128 -> 10 trained on ``mnist5k`` (real MNIST), 4-bit weights, rate-coded
  4-bit pixels, T = 2 (``--mnist-timesteps``); cycles over its 1,000 real test images. The
  weights go to SPRAM on the UP5K (loaded over the link after configuration).
* ``conv``: the ``conv`` preset (``c8k3p1-p2-c16k3p1-p2-f10``) as ``spikeforge demo --arch
  conv`` trains it on digits (T = 4); cycles over the 360 digits test images.
* ``conv-mnist``: the same preset trained on ``mnist5k`` (T = 4, about 5 minutes on one core);
  cycles over the 1,000 real test images. Its 28x28 layers need membrane and accumulator
  words beyond the UP5K's EBR, so the plan refuses it there, saying so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

OUT = Path("out/bench")
#: Lanes of the core array on each board (the UP5K has 5280 logic cells and 30 EBR in all;
#: its EBR, at most 16 bits wide, hold the P-lane-wide membrane and accumulator words).
LANES = {"icebreaker": 4, "ulx3s": 32}
#: The conv preset's layers have 8 and 16 output channels, and lanes run across output
#: channels: more than 16 lanes would idle.
CASE_LANES = {"conv": {"icebreaker": 8, "ulx3s": 16}, "conv-mnist": {"ulx3s": 16}}
TIMESTEPS = 4
#: MNIST timesteps per board (the issue's target case, 784-128-10 at T = 2).
MNIST_TIMESTEPS = {"icebreaker": 2, "ulx3s": 2}


def random_network(sizes, *, w_bits=4, timesteps=TIMESTEPS, seed=0):
    from spikeforge.sw.golden import DenseLayer, Encoder, Network

    g = torch.Generator().manual_seed(seed)
    layers = []
    for k, (a, b) in enumerate(itertools.pairwise(sizes)):
        half = 1 << (w_bits - 1)
        layers.append(DenseLayer(
            weight=torch.randint(-half, half, (b, a), generator=g),
            bias=torch.zeros(b, dtype=torch.int64), theta=[max(1, a // 4)] * timesteps,
            w_bits=w_bits, v_bits=16, fires=k < len(sizes) - 2, name=f"fc{k}"))
    return Network(layers, timesteps, Encoder("rate", 4))


def demo_network():
    """The network ``spikeforge demo`` trains (64-128-10, IF, T = 4, rate-coded 4-bit pixels),
    trained here the same way (a few seconds; the checkpoint is reused under ``out/bench``)."""
    from spikeforge.sw.data import load_dataset
    from spikeforge.sw.demo import demo_config
    from spikeforge.sw.train import integer_network, train

    checkpoint = OUT / "demo-network.pt"
    if not checkpoint.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        train(demo_config(), out=checkpoint)
    return integer_network(checkpoint), load_dataset("digits", split="test")[0][:64]


def mnist_network(timesteps: int = TIMESTEPS):
    """784-128-10 trained on the real MNIST subset (``mnist5k``: 4,000 training images; the
    IF neuron, 4-bit weights, rate-coded 4-bit pixels), with its 1,000 real test images:
    cycles depend on the spike statistics, so they come from a trained network on real data.
    The checkpoint is cached under ``out/bench``."""
    from spikeforge.sw.data import load_dataset
    from spikeforge.sw.train import TrainConfig, integer_network, train

    checkpoint = OUT / f"mnist5k-mlp-T{timesteps}.pt"
    if not checkpoint.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"training 784-128-10 on mnist5k, T = {timesteps} -> {checkpoint}", flush=True)
        train(TrainConfig(dataset="mnist5k", timesteps=timesteps, w_bits=4, encoder="rate"),
              out=checkpoint)
    return integer_network(checkpoint), load_dataset("mnist5k", split="test")[0]


def conv_network():
    """The conv preset as ``spikeforge demo --arch conv`` trains it (digits, T = 4), with the
    360 digits test images."""
    from spikeforge.sw.data import load_dataset
    from spikeforge.sw.demo import demo_config
    from spikeforge.sw.train import integer_network, train

    checkpoint = OUT / "demo-conv-network.pt"
    if not checkpoint.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        train(demo_config(arch="conv"), out=checkpoint)
    return integer_network(checkpoint), load_dataset("digits", split="test")[0]


def conv_mnist_network():
    """The conv preset trained on mnist5k (IF, T = 4, 4-bit weights, rate input), with its
    1,000 real test images."""
    from spikeforge.sw.data import load_dataset
    from spikeforge.sw.train import TrainConfig, integer_network, train

    checkpoint = OUT / "mnist5k-conv-T4.pt"
    if not checkpoint.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        print(f"training the conv preset on mnist5k, T = 4 -> {checkpoint}", flush=True)
        train(TrainConfig(dataset="mnist5k", arch="conv", timesteps=4, w_bits=4,
                          encoder="rate"), out=checkpoint)
    return integer_network(checkpoint), load_dataset("mnist5k", split="test")[0]


CASES = {"demo": demo_network, "mnist": mnist_network, "conv": conv_network,
         "conv-mnist": conv_mnist_network}


def cycles_per_inference(network, lanes, images) -> tuple[float, float]:
    """Mean cycles per image (the exact cycle model over ``images``) and mean SynOps."""
    from spikeforge.sim.network_model import network_timing

    trace = network.run(images)
    timings = network_timing(network, lanes, trace, images)
    synops = sum(float(layer.synops.double().mean()) for layer in trace.layers)
    return sum(t.cycles for t in timings) / len(timings), synops


def link_images_per_second(network, images) -> float:
    """The line's ceiling at the spec's baud rate: ``STREAM`` exchanges of ``images`` where the
    pixels fit a token, else one ``RUN`` per image."""
    from spikeforge.sw.interface import (
        link_images_per_second,
        stream_images_per_second,
        stream_supported,
    )

    bits, n_out = network.encoder.pixel_bits, network.n_outputs
    if not stream_supported(bits):
        return link_images_per_second(n_inputs=network.n_inputs, pixel_bits=bits,
                                      n_outputs=n_out)
    return stream_images_per_second(torch.as_tensor(images).tolist(), pixel_bits=bits,
                                    n_outputs=n_out)


def run_case(name, board, out_root, *, lanes=None, mnist_timesteps=None, clock_mhz=None,
             seed=1):
    from spikeforge.hw.accelerator import NetworkAccelerator
    from spikeforge.hw.boards import load_board_spec
    from spikeforge.sw.synth import (
        FitError,
        SynthError,
        build_at_met_clock,
        check_fit,
        plan_memories,
    )

    if name == "mnist":
        network, images = mnist_network((mnist_timesteps or MNIST_TIMESTEPS)[board])
    else:
        network, images = CASES[name]()
    lanes = lanes or CASE_LANES.get(name, {}).get(board) or LANES[board]
    spec = load_board_spec(board)
    plan = plan_memories(network, lanes, spec)
    cycles, synops = cycles_per_inference(network, lanes, images)
    row = {"network": name, "board": board, "lanes": lanes, "timesteps": network.timesteps,
           "required_mhz": spec.required_mhz,
           "cycles_per_inference": cycles, "synops_per_inference": synops,
           # SynOps / (P x cycles), and the port limit: cycles if every cycle delivered P
           # weights (P synaptic operations), the least any schedule can take
           "utilization": synops / (lanes * cycles), "port_limit_cycles": synops / lanes,
           "rom_kbit": plan.rom_bits / 1024,
           "plan_ebr": plan.ebr_used, "plan_spram": plan.spram_used,
           "link_images_per_s": link_images_per_second(network, images)}
    if not plan.fits:
        try:
            check_fit(network, lanes, spec, name=name)
        except FitError as error:
            row["status"] = f"refused: {error}"
        return row
    row["spram_layers"] = plan.spram_layers
    start = time.monotonic()
    try:
        report = build_at_met_clock(
            board, lambda: NetworkAccelerator(network, lanes, spram_layers=plan.spram_layers),
            out_root / f"{name}-{board}", clock_mhz=clock_mhz, seed=seed,
            progress=lambda m: print(f"  [{name}/{board}] {m}", flush=True))
    except SynthError as error:
        row["status"] = f"build failed: {str(error).splitlines()[-1]}"
        return row
    row.update(report.as_dict())
    row["status"] = "timing met" if report.timing_met else "timing NOT met"
    row["seed"] = seed
    row["inferences_per_s_at_fmax"] = report.fmax_mhz * 1e6 / cycles
    row["latency_ms_at_fmax"] = cycles / (report.fmax_mhz * 1e3)
    row["required_mhz_built"] = report.required_mhz
    row["latency_ms_at_required"] = cycles / (report.required_mhz * 1e3)
    row["latency_us_at_required"] = cycles / report.required_mhz
    row["build_s"] = time.monotonic() - start
    return row


def seed_note(row) -> str:
    return f" (nextpnr seed {row['seed']})" if "seed" in row else ""


def markdown(rows) -> str:
    head = ("| network | board | lanes | T | LUT/LC | FF | EBR | SPRAM | Fmax MHz (clock) | "
            "cycles/inf. | µs/inf. at clock | inf./s at clock | utilization | port limit "
            "(cycles) | inf./s the line carries | status |")
    lines = [head, "|" + "---|" * 16]
    for r in rows:
        def g(key, fmt="{}", r=r):
            return fmt.format(r[key]) if key in r and r[key] is not None else "-"
        lut = f"{g('luts')}/{g('luts_available')}" if "luts" in r else "-"
        ebr = f"{g('ebr')}/{g('ebr_available')}" if "ebr" in r else f"({r['plan_ebr']} planned)"
        spram = f"{g('spram')}" if "spram" in r else f"({r['plan_spram']} planned)"
        clock = r.get("required_mhz_built", r["required_mhz"])
        fmax = f"{g('fmax_mhz', '{:.1f}')} ({clock:.1f})"
        per_s = f"{clock * 1e6 / r['cycles_per_inference']:.0f}" if "fmax_mhz" in r else "-"
        lines.append(f"| {r['network']} | {r['board']} | {r['lanes']} | {r['timesteps']} | "
                     f"{lut} | {g('ffs')} | "
                     f"{ebr} | {spram} | {fmax} | {r['cycles_per_inference']:.0f} | "
                     f"{g('latency_us_at_required', '{:.1f}')} | {per_s} | "
                     f"{r['utilization']:.3f} | {r['port_limit_cycles']:.0f} | "
                     f"{r['link_images_per_s']:.1f} | {r['status']}{seed_note(r)} |")
    return "\n".join(lines) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(prog="bench_synth")
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--boards", nargs="*", default=["icebreaker", "ulx3s"],
                        choices=["icebreaker", "ulx3s"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--lanes", type=int, default=None,
                        help="lanes on every board (default: "
                             + ", ".join(f"{b} {p}" for b, p in LANES.items())
                             + "; conv " + ", ".join(f"{b} {p}" for b, p in
                                                    CASE_LANES["conv"].items()) + ")")
    parser.add_argument("--mnist-timesteps", type=int, default=None,
                        help="T of the MNIST-sized network on both boards (default: "
                             + ", ".join(f"{b} {t}" for b, t in MNIST_TIMESTEPS.items()) + ")")
    parser.add_argument("--clock", type=float, default=None,
                        help="first build's clock in MHz (default: the board's; a build that "
                             "misses it is rebuilt lower, as synth does)")
    parser.add_argument("--seed", type=int, default=1,
                        help="nextpnr's placement seed (default 1, as spikeforge synth)")
    args = parser.parse_args(argv)
    from spikeforge.sim.toolchain import have_yowasp

    if not have_yowasp():
        print("yowasp synthesis tools not installed (pip install -e '.[synth]'): skipped")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.cases:
        for board in args.boards:
            print(f"{name} on {board} ...", flush=True)
            timesteps = ({b: args.mnist_timesteps for b in MNIST_TIMESTEPS}
                         if args.mnist_timesteps else None)
            rows.append(run_case(name, board, args.out / "synth", lanes=args.lanes,
                                 mnist_timesteps=timesteps, clock_mhz=args.clock,
                                 seed=args.seed))
            print(f"  {rows[-1]['status']}", flush=True)
            # after every case: an interrupted run keeps what it measured
            (args.out / "synth.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    table = markdown(rows)
    (args.out / "synth.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
