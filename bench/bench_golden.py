"""Golden-model throughput: the integer model vs sinabs' float IAF on the same network.

A 64-128-10 network, random rate-coded digits-sized inputs, batch 1000, T = 4, 8, 16. Both run
the same integer weights and thresholds; the sinabs run uses float32 ``nn.Linear`` + ``IAF`` with
``MembraneSubtract`` and single spikes, the closest existing equivalent. The table prints
inferences per second and the ratio (ours / sinabs); spikes are checked equal, so the race is fair.

    python -m bench golden
"""

from __future__ import annotations

import argparse
import time

import torch
from rich.console import Console
from rich.table import Table

from spikeforge.sw.golden import DenseLayer, Encoder, Network


def make_network(timesteps: int, seed: int = 0) -> Network:
    gen = torch.Generator().manual_seed(seed)
    fc1 = DenseLayer(weight=torch.randint(-8, 8, (128, 64), generator=gen), bias=torch.zeros(128),
                     theta=[24] * timesteps, w_bits=4, v_bits=16, name="fc1")
    fc2 = DenseLayer(weight=torch.randint(-8, 8, (10, 128), generator=gen), bias=torch.zeros(10),
                     theta=[16] * timesteps, w_bits=4, v_bits=16, name="fc2")
    return Network([fc1, fc2], timesteps, Encoder("rate", 4))


def sinabs_model(network: Network):
    import sinabs.layers as sl
    from sinabs.activation import MembraneSubtract, SingleSpike

    modules = []
    for layer in network.layers:
        linear = torch.nn.Linear(layer.fan_in, layer.fan_out, bias=False)
        linear.weight.data = layer.weight.float()
        modules += [linear, sl.IAF(spike_threshold=torch.tensor(float(layer.theta[0])),
                                   spike_fn=SingleSpike, reset_fn=MembraneSubtract(),
                                   min_v_mem=None)]
    return torch.nn.Sequential(*modules)


def best_of_interleaved(first, second, repeats: int) -> tuple[float, float]:
    """Fastest of ``repeats`` runs of each, alternating, so both see the same machine load."""
    times = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    table = Table(title=f"Golden model throughput, 64-128-10, batch {args.batch} "
                        f"({torch.get_num_threads()} threads)")
    for column in ("T", "integer golden (inf/s)", "sinabs IAF float (inf/s)", "ratio ours/sinabs",
                   "spikes equal"):
        table.add_column(column, justify="right")
    for timesteps in (4, 8, 16):
        network = make_network(timesteps)
        pixels = torch.randint(0, 16, (args.batch, 64), generator=torch.Generator().manual_seed(1))
        frames = network.encode(pixels)
        model = sinabs_model(network)

        def ours(network=network, frames=frames):
            return network.trace_frames(frames, trace=False)

        def theirs(model=model, frames=frames):
            for module in model:
                if hasattr(module, "reset_states"):
                    module.reset_states()
            with torch.no_grad():
                return model(frames.float())

        equal = torch.equal(ours().layers[-1].spikes, theirs().to(torch.int64))
        t_ours, t_theirs = best_of_interleaved(ours, theirs, args.repeats)
        table.add_row(str(timesteps), f"{args.batch / t_ours:,.0f}",
                      f"{args.batch / t_theirs:,.0f}", f"{t_theirs / t_ours:.2f}",
                      "yes" if equal else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
