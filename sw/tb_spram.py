"""cocotb testbench of the board top with SPRAM weights, driven by the real host client:
what ``spikeforge sim --weights spram`` runs (:func:`spikeforge.sw.simulate.simulate_link`).

The design is :class:`spikeforge.hw.boards.LinkTop` (UART in, link bridge, accelerator, UART
out) around a ``NetworkAccelerator`` whose ``spram_layers`` keep their weights in the SPRAM
weight store, which starts empty as after configuration. The host side is the board's:
:func:`spikeforge.sw.run.connect` identifies the accelerator, :func:`spikeforge.sw.run.load_weights`
loads the SPRAM layers' weights from the export over the link (``W_ADDR``, ``WRITE_BLOCK`` into
``W_DATA``), and :class:`spikeforge.sw.link.LinkClient` classifies every image and reads the
counters, in a thread started with :func:`cocotb.task.bridge`; its transport,
:class:`spikeforge.sw.uart_transport.CocotbUartTransport`, hands each ``write``/``read`` back
to the simulation, where the cocotbext-uart models drive and watch the serial lines. For the
traced images the accelerator's spike and membrane taps are watched inside the design
(``dut.accelerator``) with the harness's :class:`~spikeforge.sim.harness.StreamSink`.

Parameters (:func:`spikeforge.sim.harness.tb_params`, written by
:func:`spikeforge.sim.runner.run_tests`): ``images`` (integer pixels per image), ``trace``
(record every spike and membrane of the first N), ``export_dir`` (the network whose weights are
loaded), ``load_weights`` (false leaves SPRAM empty: what a board computes when the host skips
the load), ``lanes``, ``divisor``, ``clock_ns``, ``timeout_cycles`` (the built design's),
``client_second_bytes`` (one second of the client's timeouts in byte times),
``op_budget_cycles`` (the longest one link transaction may take, retries included),
``tap_ports`` (the port metadata of the accelerator's taps), ``progress`` (a file that gets
the number of images done) and ``stream`` (classify with ``classify_stream``, as
``spikeforge run`` does: no counters per image, and ``stream_sim_ns``, the simulated time from
the first image's exchange to the last result). Every host call waits at most
``op_budget_cycles`` of simulated time per transaction it makes, then fails with the state it
was in; no wait is in wall-clock time.

The report (``params["report"]``) has :mod:`spikeforge.sim.tb_network`'s entries (``results``:
``scores``, ``prediction``, ``cycles``, ``layer_cycles``, ``synops``, ``spikes``, ``status``, and
for traced images ``input`` and ``layers``), so :func:`spikeforge.sim.network_check.compare`
scores it against the golden and cycle models, plus ``loaded`` (the layers whose weights went
over the link), ``spram_layers`` (those the board reports in RAM) and ``weight_chunks`` (the
32-bit words sent).

It lives in the application layer, not in ``spikeforge.sim``: it drives the host client.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge
from cocotb.triggers import ClockCycles, with_timeout
from cocotb.utils import get_sim_time

from spikeforge.sim.harness import Port, Report, StreamSink, tb_params
from spikeforge.sw.export import load_manifest
from spikeforge.sw.link import MAX_WORDS, LinkClient, register_address
from spikeforge.sw.run import connect, load_weights
from spikeforge.sw.uart_transport import CocotbUartTransport

__all__ = ["run_link_job"]


class _Taps:
    """The accelerator's spike taps (input, every layer) and membrane taps, watched while
    :attr:`on`; :meth:`take` decodes what they carried during one image."""

    def __init__(self, scope, clk, ports: dict, network, lanes: int):
        self.network, self.lanes = network, lanes
        names = ["input_spikes", *(f"layer{k}_spikes" for k in range(len(network.layers)))]
        self.spikes = [(StreamSink(scope, clk, name, active=False),
                        Port(None, ports[f"{name}__payload"])) for name in names]
        self.membranes = [(StreamSink(scope, clk, f"layer{k}_membranes", active=False),
                           Port(None, ports[f"layer{k}_membranes__payload"]))
                          for k in range(len(network.layers))]

    def on(self, active: bool) -> None:
        for sink, _ in self.spikes + self.membranes:
            sink.active = active

    def clear(self) -> None:
        for sink, _ in self.spikes + self.membranes:
            sink.clear()

    def take(self) -> tuple[list, list]:
        """``(input spikes, layers)`` in :mod:`spikeforge.sim.tb_network`'s report format."""
        trains = []
        for sink, port in self.spikes:
            steps: list[list[int]] = [[]]
            while not sink.empty():
                word = sink.recv_nowait()
                if port.unpack(word, "eot"):
                    steps.append([])
                else:
                    steps[-1].append(port.unpack(word, "addr"))
            trains.append(steps[:-1])
        layers = []
        T = self.network.timesteps
        for (sink, port), layer, spikes in zip(self.membranes, self.network.layers, trains[1:],
                                               strict=True):
            values: list[list[int | None]] = [[None] * layer.fan_out for _ in range(T)]
            while not sink.empty():
                word = sink.recv_nowait()
                t, g = port.unpack(word, "timestep"), port.unpack(word, "group")
                for lane, v in enumerate(port.unpack(word, "v")):
                    i = g * self.lanes + lane
                    if i < layer.fan_out and t < T:
                        values[t][i] = v
            layers.append({"spikes": spikes, "membranes": values})
        return trains[0], layers


class _LinkTB:
    def __init__(self, dut, job: dict):
        # cocotbext-uart 0.1.4 still calls setimmediatevalue, which cocotb 2 deprecates
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"cocotbext\.uart")
        from cocotbext.uart import UartSink, UartSource

        self.dut, self.job = dut, job
        clock_ns, divisor = job["clock_ns"], job["divisor"]
        byte_ns = 10 * clock_ns * divisor
        Clock(dut.clk, clock_ns, unit="ns").start()
        self.source = UartSource(dut.rx, baud=1e9 / (clock_ns * divisor))
        self.sink = UartSink(dut.tx, baud=1e9 / (clock_ns * divisor))
        scale = job["client_second_bytes"] * byte_ns / 1e9
        self.client = LinkClient(CocotbUartTransport(self.source, self.sink, time_scale=scale),
                                 timeout=1.0, retries=2)
        self.op_ns = job["op_budget_cycles"] * clock_ns
        self.doing = "reset"

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 5)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 5)

    async def host(self, function, *args, ops: int):
        """Run ``function(client, *args)`` in a thread, as the host program does on a board,
        within ``ops`` link transactions' budget of simulated time."""
        self.doing = getattr(function, "__name__", "host call")
        budget = math.ceil(ops * self.op_ns)  # whole ns: any clock period
        try:
            return await with_timeout(bridge(function)(self.client, *args), budget, "ns")
        except TimeoutError as exc:  # cocotb's SimTimeoutError
            busy = self.dut.accelerator.busy.value
            raise AssertionError(
                f"host call {self.doing} ran past its budget of {budget} ns ({ops} link "
                f"transactions): {self.sink.count()} reply bytes unread, accelerator "
                f"busy={busy}") from exc


def _chunks(network, lanes: int, layers) -> dict[int, int]:
    """32-bit words :func:`spikeforge.sw.run.load_weights` sends per SPRAM layer."""
    from spikeforge.hw.core_layout import core_layout

    chunks = core_layout(network, lanes).weight_chunks()
    return {k: len(chunks[k]) for k in layers if k in chunks}


def _load_ops(chunks: dict[int, int], n_layers: int) -> int:
    """Link transactions of :func:`spikeforge.sw.run.load_weights` at most: the network check
    (N_LAYERS, LANES, every layer's descriptor), LANES, every layer's W_INFO, and per SPRAM
    layer W_ADDR + WRITE_BLOCK per frame and LAYER_STATUS."""
    check = 2 + n_layers
    return check + 1 + n_layers + sum(2 + 2 * math.ceil(n / (MAX_WORDS // 2))
                                      for n in chunks.values())


def _counters(client, n_layers: int) -> dict:
    counters = client.read_counters(n_layers)
    layer_cycles = client.read_many([register_address("LAYER_CYCLES", k)
                                     for k in range(n_layers)])
    return {"cycles": counters.cycles, "status": counters.status,
            "synops": list(counters.synops), "spikes": list(counters.spikes),
            "layer_cycles": layer_cycles}


@cocotb.test()
async def run_link_job(dut):
    """Connect, load the SPRAM weights over the link, classify every image, read counters."""
    job = tb_params()
    report = Report(job.get("report"))
    tb = _LinkTB(dut, job)
    network = load_manifest(job["export_dir"]).network
    lanes, n_layers = job["lanes"], len(network.layers)
    taps = _Taps(dut.accelerator, dut.clk, job["tap_ports"], network, lanes)
    await tb.reset()
    board = await tb.host(connect, ops=3 + n_layers)
    chunks = _chunks(network, lanes, board.spram_layers)
    loaded: list[int] = []
    start_ns = get_sim_time(unit="ns")
    if job["load_weights"]:
        loaded = await tb.host(load_weights, board, network, ops=_load_ops(chunks, n_layers))
    load_ns = get_sim_time(unit="ns") - start_ns
    n_trace = job.get("trace", 0)
    progress = job.get("progress")
    results = []
    start = time.perf_counter()
    if job.get("stream"):
        def stream(client, images):
            out = []
            for scores, prediction in client.classify_stream(images):
                out.append({"scores": scores, "prediction": prediction})
                if progress:
                    Path(progress).write_text(f"{len(out)}\n")
            return out

        stream_start = get_sim_time(unit="ns")
        results = await tb.host(stream, job["images"], ops=len(job["images"]) + 2)
        report.data["stream_sim_ns"] = get_sim_time(unit="ns") - stream_start
    else:
        for index, pixels in enumerate(job["images"]):
            taps.clear()
            taps.on(index < n_trace)
            scores, prediction = await tb.host(lambda c, p=pixels: c.classify(p), ops=2)
            taps.on(False)
            entry = {"scores": scores, "prediction": prediction,
                     **await tb.host(_counters, n_layers, ops=2 * n_layers + 4)}
            if index < n_trace:
                entry["input"], entry["layers"] = taps.take()
            results.append(entry)
            if progress:
                Path(progress).write_text(f"{index + 1}\n")
    report.data.update(results=results, registers={}, loaded=loaded,
                       spram_layers=list(board.spram_layers),
                       weight_chunks=sum(chunks[k] for k in loaded), load_sim_ns=load_ns,
                       wall_seconds=time.perf_counter() - start,
                       sim_time_ns=get_sim_time(unit="ns"))
    report.test("run_link_job", images=len(results))
