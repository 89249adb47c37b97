"""Shared pytest settings: one random seed per run, the same in every xdist worker; no
wall-clock limits in property tests; and the count of random RTL cases compared, printed as one
line at the end of the run."""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, settings

# Tests check correctness, benchmarks check time: Hypothesis's default 200 ms deadline per
# example and its too-slow health check are wall-clock limits, which a loaded machine breaks.
settings.register_profile("spikeforge", deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("spikeforge")

#: The user property under which an RTL test reports what it compared (see ``rtl_tally``).
_TALLY = "spikeforge_rtl"
_RESULTS: list[dict] = []


def pytest_configure(config):
    # Workers are started after the controller's pytest_configure and inherit its environment.
    if not os.environ.get("SPIKEFORGE_SEED"):
        os.environ["SPIKEFORGE_SEED"] = str(random.SystemRandom().randrange(1 << 31))


def pytest_report_header(config):
    seed = os.environ["SPIKEFORGE_SEED"]
    return f"spikeforge random seed: {seed} (replay: SPIKEFORGE_SEED={seed})"


@pytest.fixture
def rtl_tally(request):
    """``rtl_tally(kind, sim=..., cases=..., mismatches=..., config=..., ...)`` records what an
    RTL test compared: ``kind`` is ``"layer"`` (random layer cases, each compared in full),
    ``"network"`` (a random network: ``cases`` images, ``traced`` of them in full) or
    ``"directed"``. The record travels with the test's report (``user_properties``), so under
    pytest-xdist the controller sees it too; :func:`pytest_terminal_summary` adds them up."""

    def record(kind: str, **values) -> None:
        request.node.user_properties.append((_TALLY, {"kind": kind, **values}))

    return record


def pytest_runtest_logreport(report):
    if report.when == "call":
        _RESULTS.extend(value for key, value in report.user_properties if key == _TALLY)


def _summary(results: list[dict]) -> str:
    def total(kind, key="cases", sim=None):
        return sum(r.get(key, 0) for r in results
                   if r["kind"] == kind and (sim is None or r.get("sim") == sim))

    layer = [r for r in results if r["kind"] == "layer"]
    sims = sorted({r["sim"] for r in layer}, key=lambda s: (s != "verilator", s))
    parts = []
    for sim in sims:
        configs = {r["config"] for r in layer if r["sim"] == sim}
        parts.append(f"{total('layer', sim=sim):,} on {sim} over {len(configs)} configurations")
    line = "random RTL cases: " + (" + ".join(parts) + " (layer engine, each compared in full)"
                                   if parts else "no layer-engine cases")
    networks = [r for r in results if r["kind"] == "network"]
    if networks:
        line += (f"; {len(networks)} random networks ({total('network'):,} images, "
                 f"{total('network', 'traced'):,} traced in full)")
    if total("stalled"):
        line += f"; {total('stalled'):,} random cases again under stalls"
    if total("directed"):
        line += f"; {total('directed'):,} directed inferences"
    mismatches = sum(r.get("mismatches", 0) for r in results)
    line += f"; {mismatches:,} mismatches; seed {os.environ.get('SPIKEFORGE_SEED')}"
    fixed = sorted({r["fixed_seed"] for r in results if r.get("fixed_seed") is not None})
    if fixed:
        line += f" (plus fixed seed {', '.join(map(str, fixed))})"
    return line


def pytest_terminal_summary(terminalreporter):
    if _RESULTS:
        terminalreporter.write_line(_summary(_RESULTS))
