"""Board constraints (pins, clocks, timing beyond amaranth-boards), shipped as package data.

``importlib.resources.files("spikeforge.constraints") / "<board>.toml"`` finds them in a
checkout and in an installed wheel alike.
"""
