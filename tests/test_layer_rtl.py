"""The layer engine on Verilator, checked cycle-exactly by cocotb against the golden model.

Each configuration is one Verilator build (cached under ``sim_build/``) that runs many random
cases: the ``loadable`` variant takes each case's weights and biases through its load ports, and
the ROM variant runs the layer it was elaborated from. The random seed is printed in pytest's
header; ``SPIKEFORGE_SEED=<seed>`` replays a run, ``SPIKEFORGE_CASE=<index>`` one case of it.

Everything runs on ``$SPIKEFORGE_SIM`` (``make test SIM=icarus``; Verilator by default); the
``*_on_the_other_simulator`` tests run a few configurations on the other one, and
``test_random_x_values`` one on Verilator with random X values (``--x-initial unique``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spikeforge.sim.cycle_model import worst_case_cycles
from spikeforge.sim.layer_cases import (
    REGRESSION_CONFIGS,
    ROM_CONFIGS,
    EngineConfig,
    regression_plan,
)
from spikeforge.sim.runner import default_simulator, simulator_missing

#: The simulator of this run, and the other one (a few configurations run there too).
SIM = default_simulator()
OTHER = "icarus" if SIM == "verilator" else "verilator"

pytestmark = pytest.mark.skipif(simulator_missing(SIM) is not None,
                                reason=f"{SIM}: {simulator_missing(SIM)}")

#: Cases per configuration in `make test`: 22 configurations x 46 = 1,012 random cases.
CASES = int(os.environ.get("SPIKEFORGE_CASES", "46"))
#: Configurations that also run the directed cases.
DIRECTED = {REGRESSION_CONFIGS[k].name for k in (0, 1, 5, 8, 11)}

#: Larger layers for `make test-long` only.
LONG_CONFIGS = [
    EngineConfig(32, 64, 128, 16, 8, 16),
    EngineConfig(16, 64, 128, 8, 4, 12),
    EngineConfig(32, 128, 10, 16, 8, 16),
    EngineConfig(8, 50, 70, 16, 6, 10),
]


def _seed() -> int:
    return int(os.environ["SPIKEFORGE_SEED"])


def budget_cycles(config: EngineConfig) -> int:
    """Cycles one inference may take: the layer's worst case (every input and neuron spiking
    every step, up to 8 dropped addresses a step) with room for the directed cases' random
    stalls (a producer valid 60 % and a consumer ready 50 % of the cycles)."""
    return 4 * worst_case_cycles(config.fan_in, config.fan_out, config.timesteps, config.lanes,
                                 bad_per_step=8) + 256


def _run(config: EngineConfig, testcase: str, plan_dir: Path, cases: int = CASES, *,
         sim: str | None = None, x: str | None = None) -> dict:
    """Build ``config`` for ``sim`` (default :data:`SIM`) and run the cocotb tests
    ``testcase`` on it.

    The random regression's cases and golden expectations are computed here and handed to the
    simulator as a JSON plan, so that process does not load torch.
    """
    from spikeforge.sim import runner

    sim = sim or SIM
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")
    built = runner.build(config.component(), "layer_engine", sim=sim, x=x)
    seed = _seed()
    only = os.environ.get("SPIKEFORGE_CASE")
    indices = [int(only)] if only else list(range(cases))
    plan = plan_dir / "plan.json"
    plan.write_text(json.dumps(regression_plan(config, seed, indices)))
    env = {
        "SPIKEFORGE_TB_CONFIG": json.dumps(config.as_dict()),
        "SPIKEFORGE_SEED": str(seed),
        "SPIKEFORGE_TB_PLAN": str(plan),
        "SPIKEFORGE_TB_BUDGET": str(budget_cycles(config)),
    }
    return runner.run_tests(built, "spikeforge.sim.tb_layer", testcase=testcase, env=env)


@pytest.mark.parametrize("config", REGRESSION_CONFIGS, ids=lambda c: c.name)
def test_random_regression(config, tmp_path):
    tests = "random_regression" + (",directed" if config.name in DIRECTED else "")
    report = _run(config, tests, tmp_path)
    result = report["tests"]["random_regression"]
    if "SPIKEFORGE_CASE" in os.environ:
        assert result["cases"] == 1
    else:
        assert result["cases"] == CASES
        assert result["saturating_cases"] >= 1, "no case hit saturation"
    if config.name in DIRECTED:
        assert report["tests"]["directed"]["cases"] >= 8


@pytest.mark.parametrize("config", ROM_CONFIGS, ids=lambda c: c.name)
def test_rom_variant(config, tmp_path):
    report = _run(config, "rom_contents", tmp_path, cases=0)
    assert report["tests"]["rom_contents"]["cases"] == 7


@pytest.mark.slow
@pytest.mark.parametrize("config", REGRESSION_CONFIGS + LONG_CONFIGS, ids=lambda c: c.name)
def test_random_regression_long(config, tmp_path):
    report = _run(config, "random_regression", tmp_path,
                  cases=400 if config in LONG_CONFIGS else 300)
    assert report["tests"]["random_regression"]["cases"] >= 1


#: The subset `make test` also runs on the other simulator: two loadable configurations with
#: their directed cases (one with a partly filled last group), and a ROM variant whose first
#: inference runs straight from the reset values.
OTHER_CONFIGS = [REGRESSION_CONFIGS[k] for k in (1, 5)]
OTHER_CASES = 12


@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: c.name)
def test_random_regression_on_the_other_simulator(config, tmp_path):
    report = _run(config, "random_regression,directed", tmp_path, cases=OTHER_CASES, sim=OTHER)
    assert report["tests"]["random_regression"]["cases"] == (
        1 if "SPIKEFORGE_CASE" in os.environ else OTHER_CASES)
    assert report["tests"]["directed"]["cases"] >= 8


def test_rom_variant_on_the_other_simulator(tmp_path):
    """Its first inference runs on the reset values alone: what an X after reset breaks."""
    report = _run(ROM_CONFIGS[1], "rom_contents", tmp_path, cases=0, sim=OTHER)
    assert report["tests"]["rom_contents"]["cases"] == 7


def test_random_x_values(tmp_path):
    """Verilator with ``--x-initial unique --x-assign unique``: every variable without an
    initial value (memory read registers, ...) starts random (seed from the run's seed), so an
    inference that reads one before writing it differs from the golden model."""
    report = _run(ROM_CONFIGS[1], "rom_contents", tmp_path, cases=0, sim="verilator",
                  x="unique")
    assert report["tests"]["rom_contents"]["cases"] == 7
