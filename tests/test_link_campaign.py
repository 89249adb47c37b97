"""The link bridge on its byte-stream side, on the RTL simulators (sim/tb_link.py,
sim/link_campaign.py): defined state after reset, and the fault campaign against the Python
model of the bridge.

``make test`` runs a campaign of :data:`FRAMES` malformed frames on ``$SPIKEFORGE_SIM`` and a
short one on the other simulator and with random X values; ``make test-long`` (``slow``) runs
:data:`LONG_FRAMES`. The seed is the run's ``SPIKEFORGE_SEED`` (printed in pytest's header);
``SPIKEFORGE_SEED=<seed> python -m bench link --frames <n>`` replays a campaign and prints its
counts per fault kind.
"""

from __future__ import annotations

import os
import random

import pytest

from spikeforge.sim.link_campaign import (
    FAULTS,
    CampaignTop,
    FrameMaker,
    Scoreboard,
    Step,
    campaign_steps,
    fault_step,
    outcome_table,
    run_campaign,
)
from spikeforge.sim.link_model import LinkModel, MockBackend
from spikeforge.sim.runner import build, default_simulator, run_tests, simulator_missing
from spikeforge.sw.interface import Command, ErrorCode, encode_request

SIM = default_simulator()
OTHER = "icarus" if SIM == "verilator" else "verilator"
#: Malformed frames per `make test` run, on SIM; a short campaign on the other simulator and
#: with random X values.
FRAMES = int(os.environ.get("SPIKEFORGE_LINK_FRAMES", "3000"))
SHORT_FRAMES = 300
LONG_FRAMES = 100_000

SHAPE = {"n_inputs": 8, "pixel_bits": 7, "n_layers": 2, "timesteps": 4}


def _seed() -> int:
    return int(os.environ["SPIKEFORGE_SEED"])


def _need(sim: str) -> None:
    if simulator_missing(sim):
        pytest.skip(f"{sim}: {simulator_missing(sim)}")


# ---- the generator and the model, in Python ------------------------------------------------------

#: What the model must answer to each fault kind (a guard on the generator: each kind makes the
#: fault it is named after). Garbage, flips and restarts get any error. A good frame with bytes
#: after it is answered as the model answers it: BUSY for a RUN or a write while a STREAM image
#: is pending.
ANY_ERROR = {code.name for code in ErrorCode if code is not ErrorCode.OK}
EXPECTED = {
    "truncate": {"TIMEOUT"}, "length": {"LENGTH"}, "command": {"COMMAND"}, "sync": {"SYNC"},
    "crc": {"CRC"}, "extra": {"OK", "BUSY"}, "reset": {"ignored"}, "argument": {"ARGUMENT"},
    "pixel": {"PIXEL"}, "busy": {"BUSY"},
}


@pytest.mark.parametrize("kind", FAULTS)
def test_fault_kinds_make_their_fault(kind):
    rng = random.Random(_seed())
    maker = FrameMaker(rng, **SHAPE)
    board = Scoreboard(n_outputs=3, **SHAPE)
    for _ in range(200):
        board.expect(fault_step(kind, maker))
    outcomes = {outcome for (k, outcome) in board.counts if k == kind}
    assert outcomes <= EXPECTED.get(kind, ANY_ERROR), f"seed {_seed()}: {kind} gave {outcomes}"
    assert board.malformed_writes == 0


def test_campaign_steps_count_and_audit():
    rng = random.Random(1)
    steps = list(campaign_steps(rng, FrameMaker(rng, **SHAPE), 1200))
    kinds = [s.kind for s in steps]
    assert sum(k in FAULTS for k in kinds) == 1200
    assert kinds[-1] == "audit" and "good" in kinds and set(FAULTS) <= set(kinds)


def test_model_feed_stops_at_a_completed_frame_and_reset_forgets():
    model = LinkModel(MockBackend(n_inputs=8, n_outputs=3))
    info = encode_request(Command.INFO)
    assert model.feed(info + b"\x01\x02") == len(info)  # the rest arrives during the reply
    assert len(model.replies) == 1
    assert model.feed(info[:3]) == 3
    model.reset()  # the half frame is forgotten: no reply, the next frame is answered
    model.quiet()
    assert len(model.replies) == 1
    model.feed(info)
    assert len(model.replies) == 2


def test_campaign_top_parameter_errors():
    with pytest.raises(ValueError, match="timeout_cycles must be at least 40"):
        CampaignTop(timeout_cycles=20)
    with pytest.raises(ValueError, match="script_bytes must hold two of the longest frames"):
        CampaignTop(script_bytes=300)


def test_scoreboard_trims_bytes_after_a_completed_frame():
    board = Scoreboard(n_outputs=3, **SHAPE)
    info = encode_request(Command.INFO)
    expected = board.expect(Step("extra", info + bytes(10)))
    assert expected.data == info + bytes(4) and expected.tight_from == len(info)
    assert expected.reply[2] == ErrorCode.OK


# ---- on the simulators -------------------------------------------------------------------------

def test_defined_after_reset_icarus():
    """Every signal of the bridge, the mock accelerator and the harness is 0 or 1 after reset
    on Icarus, which leaves a comb `always @*` block X until one of its inputs changes (the
    bridge's write/read port enables, pixel and result handshakes and tx byte were, issue 14)."""
    _need("icarus")
    built = build(CampaignTop(), "link_campaign", sim="icarus")
    report = run_tests(built, "spikeforge.sim.tb_link", testcase="defined_after_reset")
    report = report["tests"]["defined_after_reset"]
    assert report["undefined"] == []
    assert report["signals"] > 400  # the whole hierarchy was walked


def test_defined_after_reset_random_x(monkeypatch):
    """With Verilator's random X values (``--x-initial unique``), two X seeds give the same
    value of every signal after reset: nothing depends on an uninitialised variable."""
    _need("verilator")
    built = build(CampaignTop(), "link_campaign", sim="verilator", x="unique")
    values = []
    for x_seed in (_seed() % 1000 + 1, _seed() % 1000 + 1001):
        monkeypatch.setenv("SPIKEFORGE_X_SEED", str(x_seed))
        report = run_tests(built, "spikeforge.sim.tb_link", testcase="defined_after_reset")
        values.append(report["tests"]["defined_after_reset"]["values"])
    assert values[0].keys() == values[1].keys() and len(values[0]) > 400
    differ = [f"{name}: {values[0][name]} / {values[1][name]}" for name in values[0]
              if values[0][name] != values[1][name]]
    assert not differ, f"signals that depend on the X seed: {differ}"


def _campaign(frames: int, sim: str, x: str | None = None) -> None:
    _need(sim)
    result = run_campaign(frames, _seed(), sim=sim, x=x)
    print(f"\n{result.summary()}\n{outcome_table(result.counts)}")
    assert result.malformed == frames
    assert result.malformed_writes == 0, "a malformed frame was executed (CRC collision?)"


def test_fault_campaign():
    """FRAMES malformed frames (every kind of FAULTS) on SIM, each answered exactly as the
    model says, no register written by a bad frame, the bridge idle after each."""
    _campaign(FRAMES, SIM)


def test_fault_campaign_on_the_other_simulator():
    _campaign(SHORT_FRAMES, OTHER)


def test_fault_campaign_random_x():
    _campaign(SHORT_FRAMES, "verilator", x="unique")


@pytest.mark.slow
def test_fault_campaign_long():
    """Issue 14's campaign: LONG_FRAMES malformed frames (about 2 minutes on Verilator)."""
    _campaign(LONG_FRAMES, SIM)
