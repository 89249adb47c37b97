"""The layer engine in RTL simulation, checked cycle-exactly by cocotb against the golden model.

Each configuration is one simulator build (cached, see sim/runner.py) that runs many random
cases: the ``loadable`` variant takes each case's weights and biases through its load ports, and
the ROM variant runs the layer it was elaborated from. Cases and their golden and cycle-model
expectations are computed here and handed to the testbench (sim/tb_layer.py) as parameters.

Per configuration, `make test` runs :data:`FIXED_CASES` cases of the fixed seed
:data:`FIXED_SEED` (the same every run) and :data:`FRESH_CASES` of this run's seed (printed in
pytest's header and in the summary line): 22 configurations x 460 = 10,120 random cases, each
compared in full. A failure prints the command that replays its case
(``SPIKEFORGE_SEED=<seed> SPIKEFORGE_CASE=<index>``, which runs that one case) and the run.

Everything runs on ``$SPIKEFORGE_SIM`` (``make test SIM=icarus``; Verilator by default); the
``*_on_the_other_simulator`` tests run a few configurations on the other one, and
``test_random_x_values`` one on Verilator with random X values (``--x-initial unique``).
"""

from __future__ import annotations

import os
import shlex

import pytest

from spikeforge.sim.cycle_model import worst_case_cycles
from spikeforge.sim.layer_cases import (
    LOADABLE_SCENARIOS,
    REGRESSION_CONFIGS,
    ROM_CONFIGS,
    ROM_SCENARIOS,
    EngineConfig,
    directed_plan,
    regression_plan,
    rom_plan,
)
from spikeforge.sim.runner import TestFailure, default_simulator, simulator_missing

#: The simulator of this run, and the other one (a few configurations run there too).
SIM = default_simulator()
OTHER = "icarus" if SIM == "verilator" else "verilator"

pytestmark = pytest.mark.skipif(simulator_missing(SIM) is not None,
                                reason=f"{SIM}: {simulator_missing(SIM)}")

#: Random cases per configuration in `make test` (``$SPIKEFORGE_CASES``): a tenth of them from
#: this run's seed, the rest from the fixed seed.
CASES = int(os.environ.get("SPIKEFORGE_CASES", "460"))
FRESH_CASES = max(1, CASES // 10)
FIXED_CASES = CASES - FRESH_CASES
FIXED_SEED = 14
#: Of which the configurations with directed scenarios run this many again under stalls (idle
#: cycles, back-pressure, both).
STALLED_CASES = 16
#: Configurations that also run the directed scenarios.
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


def _cases(fixed: int, fresh: int) -> list[tuple[int, int]]:
    """``(seed, index)`` of the random cases: ``fixed`` of :data:`FIXED_SEED` and ``fresh`` of
    the run's seed, or the one case ``$SPIKEFORGE_CASE`` of the run's seed."""
    only = os.environ.get("SPIKEFORGE_CASE")
    if only:
        return [(_seed(), int(only))]
    return [(FIXED_SEED, i) for i in range(fixed)] + [(_seed(), i) for i in range(fresh)]


def budget_cycles(config: EngineConfig) -> int:
    """Cycles one inference may take: the layer's worst case (every input and neuron spiking
    every step, up to 8 dropped addresses a step) with room for the stalled variants (a
    producer valid 60 % and a consumer ready 50 % of the cycles)."""
    return 4 * worst_case_cycles(config.fan_in, config.fan_out, config.timesteps, config.lanes,
                                 bad_per_step=8) + 256


def _replay(request, report: dict) -> str:
    """The commands that replay a failure: its random case alone, and the whole test."""
    env = [f"SPIKEFORGE_SIM={SIM}"] if SIM != "verilator" else []
    test = f".venv/bin/python -m pytest {shlex.quote(request.node.nodeid)}"
    lines = [f"replay the run: {' '.join([*env, f'SPIKEFORGE_SEED={_seed()}', test])}"]
    case = report.get("failed_case")
    if case and case.get("seed") is not None:
        lines.insert(0, "replay the case: " + " ".join(
            [*env, f"SPIKEFORGE_SEED={case['seed']}", f"SPIKEFORGE_CASE={case['index']}", test]))
    return "\n".join(lines)


def _run(request, rtl_tally, config: EngineConfig, tests: list[str], *,
         cases: list[tuple[int, int]] = (), sim: str | None = None, x: str | None = None,
         scenarios: dict | None = None) -> dict:
    """Build ``config`` for ``sim`` (default :data:`SIM`) and run the cocotb ``tests`` on it
    with the random ``cases`` and the directed ``scenarios``; count what was compared."""
    from spikeforge.sim import runner

    sim = sim or SIM
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")
    built = runner.build(config.component(), "layer_engine", sim=sim, x=x)
    params = {"config": config.name, "seed": _seed(), "budget_cycles": budget_cycles(config),
              "plan": regression_plan(config, None, cases=cases),
              "stalled_cases": STALLED_CASES, "scenarios": scenarios or {}}
    try:
        report = runner.run_tests(built, "spikeforge.sim.tb_layer", testcase=tests, params=params)
    except TestFailure as failure:
        _tally(rtl_tally, failure.report, config, sim, failed=True)
        raise TestFailure(f"{failure}\n{_replay(request, failure.report)}",
                          failure.report) from None
    _tally(rtl_tally, report, config, sim)
    return report


def _tally(rtl_tally, report: dict, config: EngineConfig, sim: str, *, failed=False) -> None:
    """Count the random cases (compared in full), the random cases under stalls and the
    directed inferences of one run; a failure counts as one mismatch of the test it was in."""
    tests = report.get("tests", {})
    failed_in = (report.get("failed_case") or {}).get("test")
    if "random_regression" in tests:
        rtl_tally("layer", sim=sim, config=config.name,
                  cases=tests["random_regression"]["cases"],
                  mismatches=int(failed_in == "random_regression"), fixed_seed=FIXED_SEED)
    stalled = [name for name in tests if name.startswith("random_regression_under_stalls")]
    if stalled:
        rtl_tally("stalled", sim=sim, cases=sum(tests[name]["cases"] for name in stalled),
                  mismatches=int(failed_in in stalled))
    directed = [name for name in tests if not name.startswith("random_regression")]
    if directed or (failed and failed_in is None):
        rtl_tally("directed", sim=sim, cases=sum(tests[name]["cases"] for name in directed),
                  mismatches=int(failed and failed_in is None))


def _check_scenarios(report: dict, names) -> None:
    ran = report["cocotb"]
    for name in names:
        variants = [test for test in ran if test == name or test.startswith(f"{name}/")]
        assert len(variants) == 4, f"{name}: ran {variants}"


@pytest.mark.parametrize("config", REGRESSION_CONFIGS, ids=lambda c: c.name)
def test_random_regression(config, request, rtl_tally):
    directed = config.name in DIRECTED
    tests = ["random_regression"]
    if directed:
        tests += ["random_regression_under_stalls", *LOADABLE_SCENARIOS]
    cases = _cases(FIXED_CASES, FRESH_CASES)
    report = _run(request, rtl_tally, config, tests, cases=cases,
                  scenarios=directed_plan(config, _seed()) if directed else None)
    result = report["tests"]["random_regression"]
    assert result["cases"] == len(cases)
    if len(cases) > 1:
        assert result["saturating_cases"] >= 1, "no case hit saturation"
    if directed:
        _check_scenarios(report, LOADABLE_SCENARIOS)
        assert sum(name.startswith("random_regression_under_stalls/")
                   for name in report["cocotb"]) == 3


@pytest.mark.parametrize("config", ROM_CONFIGS, ids=lambda c: c.name)
def test_rom_variant(config, request, rtl_tally):
    report = _run(request, rtl_tally, config, list(ROM_SCENARIOS),
                  scenarios=rom_plan(config, _seed()))
    _check_scenarios(report, ROM_SCENARIOS)
    assert report["tests"]["rom_reset_values/idle=False/backpressure=False"]["cases"] == 4
    assert report["tests"]["rom_reprogrammed/idle=False/backpressure=False"]["cases"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("config", REGRESSION_CONFIGS + LONG_CONFIGS, ids=lambda c: c.name)
def test_random_regression_long(config, request, rtl_tally):
    count = 400 if config in LONG_CONFIGS else 300
    report = _run(request, rtl_tally, config, ["random_regression"],
                  cases=_cases(0, count) if "SPIKEFORGE_CASE" not in os.environ else _cases(0, 0))
    assert report["tests"]["random_regression"]["cases"] >= 1


#: The subset `make test` also runs on the other simulator: two loadable configurations with
#: their directed scenarios (one with a partly filled last group), and a ROM variant whose first
#: inference runs straight from the reset values.
OTHER_CONFIGS = [REGRESSION_CONFIGS[k] for k in (1, 5)]
OTHER_CASES = 12


@pytest.mark.parametrize("config", OTHER_CONFIGS, ids=lambda c: c.name)
def test_random_regression_on_the_other_simulator(config, request, rtl_tally):
    cases = _cases(OTHER_CASES - OTHER_CASES // 4, OTHER_CASES // 4)
    report = _run(request, rtl_tally, config, ["random_regression", *LOADABLE_SCENARIOS],
                  cases=cases, sim=OTHER, scenarios=directed_plan(config, _seed()))
    assert report["tests"]["random_regression"]["cases"] == len(cases)
    _check_scenarios(report, LOADABLE_SCENARIOS)


def test_rom_variant_on_the_other_simulator(request, rtl_tally):
    """Its first inference runs on the reset values alone: what an X after reset breaks."""
    config = ROM_CONFIGS[1]
    report = _run(request, rtl_tally, config, list(ROM_SCENARIOS), sim=OTHER,
                  scenarios=rom_plan(config, _seed()))
    _check_scenarios(report, ROM_SCENARIOS)


def test_random_x_values(request, rtl_tally):
    """Verilator with ``--x-initial unique --x-assign unique``: every variable without an
    initial value (memory read registers, ...) starts random (seed from the run's seed), so an
    inference that reads one before writing it differs from the golden model."""
    config = ROM_CONFIGS[1]
    report = _run(request, rtl_tally, config, list(ROM_SCENARIOS), sim="verilator", x="unique",
                  scenarios=rom_plan(config, _seed()))
    _check_scenarios(report, ROM_SCENARIOS)
