"""Random convolutional networks for the core array's regressions: conv and pool shapes,
padding, channel counts that are not a multiple of the lanes, every neuron field."""

from __future__ import annotations

import random

import torch

from spikeforge.sw.golden import (
    ConvLayer,
    DenseLayer,
    Encoder,
    Network,
    SumPoolLayer,
    signed_range,
)

__all__ = ["random_conv_network"]


def _neuron_fields(rng: random.Random, timesteps: int, typical: int, v_bits: int,
                   last: bool) -> dict:
    v_low, v_high = signed_range(v_bits)
    fire_mode = "radix" if rng.random() < 0.2 else "threshold"
    return {
        "theta": [rng.randint(1, max(1, min(v_high, typical))) for _ in range(timesteps)],
        "leak_shift": rng.choice([0, 0, 1, 2]) if fire_mode == "threshold" else 1,
        "fire_mode": fire_mode,
        "v_init": rng.randint(max(v_low, -3), min(v_high, 3)),
        "fires": not (last and rng.random() < 0.4),
        "compare": rng.choice([">=", ">=", ">"]),
        "reset": "zero" if fire_mode == "threshold" and rng.random() < 0.3 else "subtract",
    }


def random_conv_network(seed: int) -> tuple[Network, int]:
    """Conv (kernel 1..5, padding up to half the kernel, stride 1 or 2), an optional 2x2 sum
    pool, an optional second conv, then a dense readout layer; T 1..16; rate, radix or direct
    input; and a lane count. Fully determined by ``seed``."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    T = rng.randint(1, 16)
    encoder = Encoder(rng.choice(["rate", "radix"]), rng.randint(1, 6))
    lanes = rng.choice([1, 2, 3, 4, 8])
    shape = (rng.randint(1, 3), rng.randint(3, 8), rng.randint(3, 8))
    layers = []
    for k in range(rng.randint(1, 2)):
        c, h, w = shape
        kernel = rng.randint(1, min(5, h, w))
        padding = rng.randint(0, kernel // 2)
        stride = 2 if rng.random() < 0.3 and min(h, w) + 2 * padding >= kernel + 1 else 1
        out_c = rng.randint(1, 6)
        w_bits, v_bits = rng.randint(2, 6), rng.randint(6, 14)
        w_low, w_high = signed_range(w_bits)
        v_low, v_high = signed_range(v_bits)
        typical = max(1, w_high * c * kernel * kernel // 4)
        conv = ConvLayer(
            weight=torch.randint(w_low, w_high + 1, (out_c, c, kernel, kernel), generator=gen),
            bias=[rng.randint(max(v_low, -3), min(v_high, 3)) for _ in range(out_c)],
            w_bits=w_bits, v_bits=v_bits, name=f"conv{k}", input_shape=shape,
            padding=padding, stride=stride, **_neuron_fields(rng, T, typical, v_bits, last=False))
        layers.append(conv)
        shape = conv.output_shape
        if shape[1] >= 2 and shape[2] >= 2 and rng.random() < 0.6:
            pool = SumPoolLayer(kernel=2, input_shape=shape, name=f"pool{k}")
            layers.append(pool)
            shape = pool.output_shape
    fan_in = shape[0] * shape[1] * shape[2]
    n_out = rng.randint(1, 12)
    w_bits, v_bits = rng.randint(2, 6), rng.randint(6, 14)
    w_low, w_high = signed_range(w_bits)
    v_low, v_high = signed_range(v_bits)
    layers.append(DenseLayer(
        weight=torch.randint(w_low, w_high + 1, (n_out, fan_in), generator=gen),
        bias=[rng.randint(max(v_low, -3), min(v_high, 3)) for _ in range(n_out)],
        w_bits=w_bits, v_bits=v_bits, name="fc",
        **_neuron_fields(rng, T, max(1, w_high * fan_in // 4), v_bits, last=True)))
    if rng.random() < 0.3:     # direct (analog) input, drawn last: the other draws stay
        encoder = Encoder("direct", encoder.pixel_bits)
    return Network(layers, T, encoder), lanes
