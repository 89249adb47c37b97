"""Hardware configurations and random layer cases for the layer-engine regressions.

A :class:`EngineConfig` fixes everything that needs a new Verilator build (lane count, sizes,
widths, timesteps, ROM contents for the ROM variant). A *case* is everything the testbench can
change at run time on one build: weights and biases (through the load ports of the ``loadable``
variant), thresholds, leak shift, ``v_init``, fire mode, and the input spikes. Cases are drawn
from ``random.Random(f"{seed}/{config.name}/{index}")``, so ``(seed, config, index)`` replays one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from spikeforge.sw.golden import DenseLayer, FireMode, signed_range
from spikeforge.sw.interface import SPEC

__all__ = ["EngineConfig", "Case", "random_case", "saturation_hits", "seed002_layer",
           "REGRESSION_CONFIGS", "ROM_CONFIGS", "expectation", "register_writes", "case_plan",
           "regression_plan", "directed_plan", "rom_plan", "LOADABLE_SCENARIOS", "ROM_SCENARIOS"]


@dataclass(frozen=True)
class EngineConfig:
    lanes: int
    fan_in: int
    fan_out: int
    timesteps: int
    w_bits: int
    v_bits: int
    loadable: bool = True
    #: For the ROM variant: the seed of the layer whose weights, biases and register values are
    #: the reset contents (see :func:`rom_layer`).
    rom_seed: int | None = None

    @property
    def name(self) -> str:
        kind = "load" if self.loadable else f"rom{self.rom_seed}"
        return (f"p{self.lanes}_i{self.fan_in}_o{self.fan_out}_t{self.timesteps}"
                f"_w{self.w_bits}_v{self.v_bits}_{kind}")

    def as_dict(self) -> dict:
        return asdict(self)

    def rom_layer(self) -> DenseLayer:
        """The layer burnt into the ROM variant (the ``loadable`` variant starts from zeros)."""
        if self.rom_seed == 2:
            return seed002_layer()
        return random_case(self, self.rom_seed or 0, 0, style="plain").layer

    def component(self):
        from spikeforge.hw.layer import LayerEngine

        if self.loadable:
            return LayerEngine(fan_in=self.fan_in, fan_out=self.fan_out,
                               timesteps=self.timesteps, lanes=self.lanes, w_bits=self.w_bits,
                               v_bits=self.v_bits, loadable=True)
        return LayerEngine.from_layer(self.rom_layer(), lanes=self.lanes)


def seed002_layer() -> DenseLayer:
    """Seed 002's worked example: weight 2, radix mode, leak 1; input 1,0,1,0 -> 0,1,0,1."""
    return DenseLayer(weight=torch.tensor([[2]]), bias=torch.tensor([0]),
                      theta=torch.ones(4, dtype=torch.int64), leak_shift=1,
                      fire_mode=FireMode.RADIX, w_bits=4, v_bits=8, name="seed002")


@dataclass
class Case:
    """One inference to run: the layer (weights and registers) and its input spikes."""

    layer: DenseLayer
    spikes_in: torch.Tensor  # int[T, fan_in], binary
    style: str
    index: int

    def with_layer(self, layer: DenseLayer) -> Case:
        """The same input spikes on another layer."""
        return Case(layer, self.spikes_in, self.style, self.index)

    def beats(self) -> list[tuple[int, int]]:
        """The input stream: ``(addr, eot)`` per beat, ascending addresses per timestep."""
        out = []
        for t in range(self.spikes_in.shape[0]):
            out += [(int(j), 0) for j in self.spikes_in[t].nonzero().flatten().tolist()]
            out.append((0, 1))
        return out


#: Case styles, taken in turn by case index so every configuration sees each of them.
STYLES = ("plain", "saturate", "radix", "sparse", "plain", "all_fire", "dense", "plain")


def random_case(config: EngineConfig, seed: int, index: int, style: str | None = None) -> Case:
    """A random layer of ``config``'s shape and a random input spike train."""
    rng = random.Random(f"{seed}/{config.name}/{index}")
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    style = style or STYLES[index % len(STYLES)]
    m, n, steps = config.fan_in, config.fan_out, config.timesteps
    w_low, w_high = signed_range(config.w_bits)
    v_low, v_high = signed_range(config.v_bits)

    def ints(low, high, shape):
        return torch.randint(low, high + 1, shape, generator=gen)

    density = {"sparse": 0.08, "dense": 0.8}.get(style, rng.choice([0.1, 0.3, 0.5]))
    weight = ints(w_low, w_high, (n, m))
    typical = max(1, int(w_high * (m * density) ** 0.5))
    bias_span = max(1, min(v_high, typical // 2))
    bias = ints(max(v_low, -bias_span), min(v_high, bias_span), (n,))
    theta = ints(1, max(1, min(v_high, typical)), (steps,))
    mode = FireMode.RADIX if style == "radix" or rng.random() < 0.2 else FireMode.THRESHOLD
    leak = rng.choice([0, 0, 1, 2, 3]) if mode is FireMode.THRESHOLD else rng.choice([1, 1, 0, 2])
    leak = min(leak, config.v_bits)
    v_init = rng.randint(max(v_low, -typical), min(v_high, typical))
    fires = rng.random() > 0.1
    if style == "saturate":
        bias = ints(v_low, v_high, (n,))
        weight = torch.where(torch.rand((n, m), generator=gen) < 0.5, w_high, w_low)
        v_init = rng.choice([v_low, v_high, 0])
        theta = ints(1, v_high, (steps,))
    elif style == "all_fire":
        mode, fires, theta = FireMode.THRESHOLD, True, torch.ones(steps, dtype=torch.int64)
        bias = torch.full((n,), v_high, dtype=torch.int64)
    layer = DenseLayer(weight=weight, bias=bias, theta=theta, leak_shift=leak, fire_mode=mode,
                       v_init=v_init, fires=fires, w_bits=config.w_bits, v_bits=config.v_bits,
                       name=f"case{index}")
    spikes = (torch.rand((steps, m), generator=gen) < density).to(torch.int64)
    for t in range(steps):
        if rng.random() < 0.12:
            spikes[t] = 0
    # the compare and reset modes of NIR/snnTorch networks (drawn last: earlier draws, and so
    # the cases of earlier seeds, stay as they were)
    compare = ">" if rng.random() < 0.3 else ">="
    reset = "zero" if mode is FireMode.THRESHOLD and rng.random() < 0.3 else "subtract"
    layer = layer.with_(compare=compare, reset=reset)
    return Case(layer, spikes, style, index)


def saturation_hits(layer: DenseLayer, spikes_in: torch.Tensor, membranes: torch.Tensor) -> int:
    """How many (timestep, neuron) sums of a run lay outside the ``v_bits`` range.

    ``membranes`` is the golden model's end-of-step trace ``int[T, fan_out]``; the exact sum of
    step ``t`` is rebuilt from the membrane of step ``t - 1``.
    """
    low, high = signed_range(layer.v_bits)
    current = spikes_in.to(torch.int64) @ layer.weight.T + layer.bias
    previous = torch.cat([torch.full((1, layer.fan_out), layer.v_init), membranes[:-1] >>
                          layer.leak_shift])
    total = previous + current
    return int(((total < low) | (total > high)).sum())


#: The random regression: 24 configurations covering lane counts 1..16, fan-in and fan-out that
#: are and are not multiples of the lane count, T from 1 to 16, w_bits 2..8, v_bits 3..20.
REGRESSION_CONFIGS = [
    EngineConfig(4, 8, 8, 4, 4, 8),
    EngineConfig(4, 7, 10, 5, 3, 6),
    EngineConfig(1, 5, 3, 3, 8, 12),
    EngineConfig(2, 9, 5, 1, 2, 4),
    EngineConfig(3, 6, 7, 6, 5, 10),
    EngineConfig(8, 12, 16, 8, 8, 16),
    EngineConfig(8, 10, 13, 16, 6, 9),
    EngineConfig(16, 20, 16, 4, 4, 12),
    EngineConfig(16, 6, 33, 7, 7, 14),
    EngineConfig(5, 11, 12, 2, 3, 5),
    EngineConfig(4, 16, 4, 16, 4, 7),
    EngineConfig(2, 3, 9, 10, 6, 20),
    EngineConfig(6, 14, 6, 3, 2, 3),
    EngineConfig(7, 4, 20, 12, 8, 11),
    EngineConfig(4, 24, 11, 9, 5, 8),
    EngineConfig(12, 9, 24, 5, 4, 6),
    EngineConfig(1, 2, 1, 16, 4, 6),
    EngineConfig(10, 5, 10, 1, 3, 16),
    EngineConfig(3, 13, 2, 8, 7, 13),
    EngineConfig(8, 17, 9, 6, 2, 5),
    EngineConfig(4, 1, 6, 11, 8, 10),
    EngineConfig(2, 12, 12, 14, 3, 4),
]

#: ROM variant builds: weights and register reset values burnt in at elaboration.
ROM_CONFIGS = [
    EngineConfig(1, 1, 1, 4, 4, 8, loadable=False, rom_seed=2),
    EngineConfig(4, 9, 10, 6, 5, 10, loadable=False, rom_seed=11),
    EngineConfig(8, 6, 16, 8, 4, 12, loadable=False, rom_seed=12),
]


def expectation(layer: DenseLayer, spikes_in: torch.Tensor, lanes: int,
                bad: list[int] | None = None) -> dict:
    """What the engine must do on one inference, as plain JSON-able data.

    ``spikes``: output addresses per timestep; ``membranes[t][i]``: end-of-step membranes (golden
    model); ``cycles``: the cycle model's busy cycles; ``synops``, ``spike_count``: the counters;
    ``saturating``: whether any exact sum was clamped (coverage).
    """
    from spikeforge.sim.cycle_model import layer_schedule

    spikes, _, membranes = layer.run(spikes_in[None], trace=True)
    schedule = layer_schedule(layer, spikes_in, lanes, bad=bad, output_spikes=spikes[0])
    return {
        "spikes": [row.nonzero().flatten().tolist() for row in spikes[0]],
        "membranes": membranes[0].tolist(),
        "cycles": schedule.cycles,
        "synops": int((spikes_in != 0).sum()) * layer.fan_out,
        "spike_count": int(spikes.sum()),
        "saturating": saturation_hits(layer, spikes_in, membranes[0]) > 0,
    }


def register_writes(layer: DenseLayer) -> list[tuple[int, int]]:
    """``(offset, value)`` register writes (on an engine's ``cfg`` bus) that program
    ``layer``'s run-time values."""
    at = SPEC.layer_offset
    fire = SPEC.layer_reg("FIRE").pack(radix=int(layer.fire_mode is FireMode.RADIX),
                                       fires=int(layer.fires),
                                       greater=int(layer.compare.value == ">"),
                                       zero_reset=int(layer.reset.value == "zero"))
    writes = [(at("LEAK_SHIFT"), layer.leak_shift), (at("V_INIT"), layer.v_init),
              (at("FIRE"), fire)]
    writes += [(at("THETA", t), value) for t, value in enumerate(layer.theta.tolist())]
    return [(int(addr), int(value)) for addr, value in writes]


def case_plan(config: EngineConfig, case: Case, label: str, *, seed: int | None = None,
              load: bool = True, writes: bool = True, bad: list[int] | None = None,
              beats: list[tuple[int, int]] | None = None) -> dict:
    """Everything the testbench needs to run and check ``case`` without the golden model:
    the weight and bias words (``load``, loadable variant), the register writes (``writes``),
    the input beats (``beats``, default :meth:`Case.beats`; ``bad`` counts the dropped addresses
    among them per timestep) and the expectation."""
    from spikeforge.hw.layer import pack_bias
    from spikeforge.hw.rom import pack_weights

    layer = case.layer
    plan = {"label": label, "seed": seed, "index": case.index}
    if load:
        plan["weight_words"] = pack_weights(layer.weight, config.lanes, config.w_bits)
        plan["bias_words"] = pack_bias(layer.bias, config.lanes, config.v_bits)
    plan["writes"] = register_writes(layer) if writes else []
    plan["beats"] = beats if beats is not None else case.beats()
    plan["expect"] = expectation(layer, case.spikes_in, config.lanes, bad)
    plan["expect"]["bad_addr"] = int(any(bad or []))  # STATUS.bad_addr after the inference
    return plan


def regression_plan(config: EngineConfig, seed: int | None, indices: list[int] | None = None, *,
                    cases: Sequence[tuple[int, int]] = ()) -> dict:
    """The random regression of one build, precomputed: the cases ``indices`` of ``seed`` and
    the ``(seed, index)`` pairs of ``cases``."""
    pairs = [(seed, index) for index in indices or []] + list(cases)
    plan = []
    for case_seed, index in pairs:
        case = random_case(config, case_seed, index)
        plan.append(case_plan(config, case, f"seed {case_seed} case {index} ({case.style})",
                              seed=case_seed))
    return {"config": config.name, "cases": plan}


#: The directed scenarios (cocotb tests of :mod:`spikeforge.sim.tb_layer`) of a loadable build,
#: and of a ROM build.
LOADABLE_SCENARIOS = ("empty_timesteps", "every_neuron_fires", "reprogrammed_registers",
                      "bad_addresses", "write_while_busy", "seed002_example")
ROM_SCENARIOS = ("rom_reset_values", "rom_reprogrammed")


def directed_plan(config: EngineConfig, seed: int) -> dict:
    """The directed scenarios of a loadable build (:data:`LOADABLE_SCENARIOS`),
    their layers and inputs drawn from ``seed``, each with its expectations."""
    m, n, steps = config.fan_in, config.fan_out, config.timesteps
    base = random_case(config, seed, 10_000, style="plain")
    layer = base.layer.with_(fire_mode=FireMode.THRESHOLD, fires=True)
    v_high = signed_range(config.v_bits)[1]
    rng = random.Random(f"{seed}/{config.name}/reprogram")
    changed = layer.with_(theta=torch.tensor([rng.randint(1, max(1, v_high // 4))
                                              for _ in range(steps)]),
                          leak_shift=rng.randint(0, min(4, config.v_bits)))
    scenarios = {}

    empty = torch.zeros((steps, m), dtype=torch.int64)
    scenarios["empty_timesteps"] = {"runs": [
        case_plan(config, Case(layer, empty, "", 0), "all timesteps empty")]}

    hot = layer.with_(weight=layer.weight.clamp(min=0), bias=torch.full((n,), v_high),
                      theta=torch.ones(steps, dtype=torch.int64), leak_shift=0)
    scenarios["every_neuron_fires"] = {"runs": [
        case_plan(config, Case(hot, base.spikes_in, "", 0), "every neuron fires every step")]}

    after = case_plan(config, Case(changed, base.spikes_in, "", 0), "after reprogramming",
                      load=False)
    after["writes"] = [(reg, value) for reg, value in after["writes"]
                       if reg in {SPEC.layer_offset("LEAK_SHIFT")}
                       | {SPEC.layer_offset("THETA", t) for t in range(steps)}]
    scenarios["reprogrammed_registers"] = {
        "runs": [case_plan(config, base.with_layer(layer), "before reprogramming"), after],
        "theta": changed.theta.tolist()}

    beats, bad = [], []
    for t in range(steps):
        row = base.spikes_in[t].nonzero().flatten().tolist()
        extra = [m + rng.randint(0, 5) for _ in range(rng.randint(0, 2))] + [(1 << 16) - 1]
        mixed = [(j, 0) for j in row] + [(j, 0) for j in extra]
        rng.shuffle(mixed)
        beats += [*mixed, (0, 1)]
        bad.append(len(extra))
    clean = case_plan(config, base.with_layer(changed), "after bad addresses", load=False,
                      writes=False, bad=[0] * steps)
    scenarios["bad_addresses"] = {"runs": [
        case_plan(config, base.with_layer(changed), "bad addresses", bad=bad, beats=beats),
        clean]}

    scenarios["write_while_busy"] = {
        "runs": [case_plan(config, base.with_layer(changed), "a write while busy")],
        "theta0": int(changed.theta[0])}

    runs = []
    if steps >= 4 and config.w_bits >= 3 and config.v_bits >= 4:
        weight = torch.zeros((n, m), dtype=torch.int64)
        weight[0, 0] = 2
        radix = DenseLayer(weight=weight, bias=torch.zeros(n, dtype=torch.int64),
                           theta=torch.ones(steps, dtype=torch.int64), leak_shift=1,
                           fire_mode=FireMode.RADIX, w_bits=config.w_bits, v_bits=config.v_bits)
        s_in = torch.zeros((steps, m), dtype=torch.int64)
        s_in[:4, 0] = torch.tensor([1, 0, 1, 0])
        runs.append(case_plan(config, Case(radix, s_in, "", 0), "seed 002 example"))
    scenarios["seed002_example"] = {"runs": runs}
    return scenarios


def rom_plan(config: EngineConfig, seed: int) -> dict:
    """The scenarios of a ROM build (:data:`ROM_SCENARIOS`): four spike
    trains on the reset contents, then three runs with reprogrammed thresholds and leak shift."""
    layer = config.rom_layer()
    rng = random.Random(f"{seed}/{config.name}/rom")
    gen = torch.Generator().manual_seed(rng.getrandbits(62))
    trains = [(torch.rand((layer.timesteps, layer.fan_in), generator=gen) < 0.4).long()
              for _ in range(4)]
    if config.rom_seed == 2:
        trains[0] = torch.tensor([[1], [0], [1], [0]])
    reset_runs = [case_plan(config, Case(layer, s_in, "rom", k), f"rom reset values, train {k}",
                            load=False, writes=False) for k, s_in in enumerate(trains)]
    reprogrammed = []
    for k in range(3):
        theta = torch.tensor([rng.randint(1, (1 << (layer.v_bits - 1)) - 1)
                              for _ in range(layer.timesteps)])
        new = layer.with_(theta=theta, leak_shift=rng.randint(0, min(3, layer.v_bits)))
        reprogrammed.append(case_plan(config, Case(new, trains[k], "reprogrammed", k),
                                      f"reprogrammed {k}", load=False))
    return {"rom_reset_values": {"runs": reset_runs, "seed002": config.rom_seed == 2},
            "rom_reprogrammed": {"runs": reprogrammed}}
