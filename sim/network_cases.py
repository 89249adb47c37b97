"""Random networks for the RTL regressions: every field of the contract, many shapes."""

from __future__ import annotations

import itertools
import random

import torch

from spikeforge.sw.golden import DenseLayer, Encoder, Network, signed_range

__all__ = ["random_network", "random_pixels"]


def random_network(seed: int) -> tuple[Network, int]:
    """A random network (depth 2-4) and a lane count, fully determined by ``seed``."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    timesteps = rng.randint(1, 8)
    encoder = Encoder(rng.choice(["rate", "radix"]), rng.randint(1, 8))
    widths = [rng.randint(1, 24) for _ in range(rng.randint(3, 5))]
    lanes = rng.choice([1, 2, 3, 4, 8])
    layers = []
    for k, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        is_last = k == len(widths) - 2
        w_bits, v_bits = rng.randint(2, 8), rng.randint(5, 16)
        w_low, w_high = signed_range(w_bits)
        v_low, v_high = signed_range(v_bits)
        # thresholds around the typical current so that layers neither fall silent nor saturate
        typical = max(1, (w_high * fan_in) // 4)
        fire_mode = "radix" if rng.random() < 0.25 else "threshold"
        layers.append(DenseLayer(
            weight=torch.randint(w_low, w_high + 1, (fan_out, fan_in), generator=gen),
            bias=[rng.randint(max(v_low, -4), min(v_high, 4)) for _ in range(fan_out)],
            theta=[rng.randint(1, min(v_high, typical)) for _ in range(timesteps)],
            leak_shift=rng.choice([0, 0, 1, 2]) if fire_mode == "threshold" else 1,
            fire_mode=fire_mode,
            v_init=rng.randint(max(v_low, -3), min(v_high, 3)),
            fires=not (is_last and rng.random() < 0.4),
            w_bits=w_bits, v_bits=v_bits, name=f"fc{k}"))
    # compare and reset modes, drawn last so that the earlier draws stay as they were
    layers = [layer.with_(compare=rng.choice([">=", ">=", ">"]),
                          reset="zero" if layer.fire_mode.value == "threshold"
                          and rng.random() < 0.3 else "subtract") for layer in layers]
    if rng.random() < 0.3:     # direct (analog) input, drawn last: the other draws stay
        encoder = Encoder("direct", encoder.pixel_bits)
    return Network(layers, timesteps, encoder), lanes


def random_pixels(network: Network, count: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, network.encoder.pixel_max + 1, (count, network.n_inputs),
                         generator=gen)
