"""Shared pytest settings: one random seed per run, the same in every xdist worker."""

from __future__ import annotations

import os
import random


def pytest_configure(config):
    # Workers are started after the controller's pytest_configure and inherit its environment.
    if not os.environ.get("SPIKEFORGE_SEED"):
        os.environ["SPIKEFORGE_SEED"] = str(random.SystemRandom().randrange(1 << 31))


def pytest_report_header(config):
    seed = os.environ["SPIKEFORGE_SEED"]
    return f"spikeforge random seed: {seed} (replay: SPIKEFORGE_SEED={seed})"
