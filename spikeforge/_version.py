"""The spikeforge version, written once: pyproject.toml, manifests and --version read it."""

__version__ = "0.2.0"
