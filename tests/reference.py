"""A naive scalar re-implementation of docs/contract.md, independent of spikeforge.sw.golden.

Plain Python integers, one neuron and one timestep at a time, no tensors: slow and obvious, so
that the batched golden model can be checked against something that shares none of its code.
"""

import torch


def run_layer(weight, bias, theta, inputs, *, leak_shift=0, fire_mode="threshold", v_init=0,
              fires=True, v_bits=16):
    """``inputs[t][j]`` -> (spikes[t][i], membranes[t][i]) as nested lists of ints."""
    low, high = -(2 ** (v_bits - 1)), 2 ** (v_bits - 1) - 1
    n_out = len(weight)
    v = [v_init] * n_out
    spikes, membranes = [], []
    for t, frame in enumerate(inputs):
        s_t = [0] * n_out
        for i in range(n_out):
            if t > 0:
                v[i] = v[i] // (2 ** leak_shift)  # floor division == arithmetic shift
            total = v[i] + bias[i] + sum(weight[i][j] * frame[j] for j in range(len(frame)))
            v[i] = min(high, max(low, total))
            if fires:
                if fire_mode == "radix":
                    s_t[i] = v[i] % 2  # Python's % is the two's complement LSB for negatives
                    v[i] -= s_t[i]
                elif v[i] >= theta[t]:
                    s_t[i] = 1
                    v[i] -= theta[t]
        spikes.append(s_t)
        membranes.append(list(v))
    return spikes, membranes


def _neurons_float64(current: torch.Tensor, layer: dict, timesteps: int):
    """The contract's neuron over ``current`` (``float64[batch, T, n]``, bias included), step by
    step: ``(spikes float64[batch, T, n], final membrane float64[batch, n])``."""
    lo, hi = -2.0 ** (layer["v_bits"] - 1), 2.0 ** (layer["v_bits"] - 1) - 1
    v = torch.full(current[:, 0].shape, float(layer["v_init"]), dtype=torch.float64)
    spikes = torch.zeros_like(current)
    theta = layer["theta"].to(torch.float64)
    leak = 2.0 ** layer["leak_shift"]
    for t in range(timesteps):
        if t > 0 and layer["leak_shift"]:
            v = torch.floor(v / leak)
        v = torch.clamp(v + current[:, t], lo, hi)
        if layer["fires"]:
            if layer["fire_mode"] == "radix":
                s = v - 2 * torch.floor(v / 2)
                v = v - s
            else:
                s = (v >= theta[t]).to(torch.float64)
                v = v - theta[t] * s
            spikes[:, t] = s
    return spikes, v


def _readout_float64(last: dict, spikes: torch.Tensor, v: torch.Tensor, timesteps: int):
    """The readout of the last layer: final membrane, spike count, or radix value."""
    if not last["fires"]:
        return v
    if last["fire_mode"] == "radix":
        weights = 2.0 ** torch.arange(timesteps, dtype=torch.float64)
        return (spikes * weights[None, :, None]).sum(1)
    return spikes.sum(1)


def run_network_float64(layers: list[dict], frames: torch.Tensor, timesteps: int):
    """Run integer layers (``DenseLayer`` keyword dicts) on integer frames, with float64 tensors.

    A second, batched reference written from the contract independently of
    :mod:`spikeforge.sw.golden`: exact because every value stays an integer below 2**53.
    Returns ``(output, counts)``: the readout of the last layer and the input event count of
    every layer per sample (for synaptic operations).
    """
    x = frames.to(torch.float64)
    events = []
    spikes = v = None
    for layer in layers:
        events.append((x != 0).sum((1, 2)))
        w = layer["weight"].to(torch.float64)
        current = x @ w.T + layer["bias"].to(torch.float64)
        spikes, v = _neurons_float64(current, layer, timesteps)
        x = spikes
    out = _readout_float64(layers[-1], spikes, v, timesteps)
    return out.to(torch.int64), torch.stack(events, 1)


# --- convolution and sum pooling: plain loops over every output, tap and pixel ---------------

def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def window_count(size, kernel, stride, padding):
    """Window positions along one axis; a partial last window is dropped (as in PyTorch)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_as_dense(weight, input_shape, stride=1, padding=0):
    """The dense matrix ``[fan_out][fan_in]`` of a zero-padded 2-D convolution (no kernel flip).

    ``weight[o][c][i][j]`` nested lists; inputs and outputs flat in C-major ``(C, H, W)`` order.
    """
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    channels, height, width = input_shape
    kh, kw = len(weight[0][0]), len(weight[0][0][0])
    h_out, w_out = window_count(height, kh, sh, ph), window_count(width, kw, sw, pw)
    matrix = [[0] * (channels * height * width) for _ in range(len(weight) * h_out * w_out)]
    for o in range(len(weight)):
        for y in range(h_out):
            for x in range(w_out):
                row = matrix[(o * h_out + y) * w_out + x]
                for c in range(channels):
                    for i in range(kh):
                        for j in range(kw):
                            yy, xx = y * sh + i - ph, x * sw + j - pw
                            if 0 <= yy < height and 0 <= xx < width:
                                row[(c * height + yy) * width + xx] += weight[o][c][i][j]
    return matrix


def run_conv_layer(weight, bias, theta, inputs, *, input_shape, stride=1, padding=0, **neuron):
    """A convolution layer as the dense layer of :func:`conv_as_dense` (bias per channel)."""
    matrix = conv_as_dense(weight, input_shape, stride, padding)
    per_channel = len(matrix) // len(weight)
    dense_bias = [b for b in bias for _ in range(per_channel)]
    return run_layer(matrix, dense_bias, theta, inputs, **neuron)


def conv_reach(out_channels, kernel, input_shape, stride=1, padding=0):
    """``reach[j]``: how many output neurons of the convolution see input ``j``."""
    kh, kw = _pair(kernel)
    ones = [[[[1] * kw for _ in range(kh)] for _ in range(input_shape[0])]
            for _ in range(out_channels)]
    matrix = conv_as_dense(ones, input_shape, stride, padding)
    return [sum(row[j] for row in matrix) for j in range(len(matrix[0]))]


def sum_pool(frame, input_shape, kernel, stride=None, padding=0):
    """One timestep ``frame[j]`` (flat C-major) -> the window sums, flat C-major."""
    (kh, kw) = _pair(kernel)
    (sh, sw), (ph, pw) = _pair(kernel if stride is None else stride), _pair(padding)
    channels, height, width = input_shape
    h_out, w_out = window_count(height, kh, sh, ph), window_count(width, kw, sw, pw)
    out = []
    for c in range(channels):
        for y in range(h_out):
            for x in range(w_out):
                total = 0
                for i in range(kh):
                    for j in range(kw):
                        yy, xx = y * sh + i - ph, x * sw + j - pw
                        if 0 <= yy < height and 0 <= xx < width:
                            total += frame[(c * height + yy) * width + xx]
                out.append(total)
    return out


def run_conv_network(layers, inputs, *, direct=False):
    """One sample ``inputs[t][j]`` through ``layers``: dicts with ``kind`` "dense", "conv" or
    "sumpool" and the layer's fields as plain lists and ints.

    Returns ``(outputs, readout)``: per layer ``(spikes_or_counts, membranes_or_None, events,
    synops)`` and the readout of the last layer. Events: the non-zero entries of the input
    frames; after that every spike is one event, so a pooled count ``n`` is ``n`` events,
    except that ``direct``-coded pixels (pooled or not) are one event per non-zero value until
    the first neuron layer. An event updates every neuron that sees its input.
    """
    x, spikes_are_events, outputs = inputs, not direct, []
    spikes = membranes = layer = None
    for k, layer in enumerate(layers):
        per_input = [sum(f[j] if spikes_are_events and k else int(f[j] != 0) for f in x)
                     for j in range(len(x[0]))]
        neuron = {k: layer[k] for k in ("leak_shift", "fire_mode", "v_init", "fires", "v_bits")
                  if k in layer}
        if layer["kind"] == "sumpool":
            spikes = [sum_pool(f, layer["input_shape"], layer["kernel"], layer.get("stride"),
                               layer.get("padding", 0)) for f in x]
            membranes, synops = None, 0
        elif layer["kind"] == "conv":
            spikes, membranes = run_conv_layer(
                layer["weight"], layer["bias"], layer["theta"], x, input_shape=layer["input_shape"],
                stride=layer["stride"], padding=layer["padding"], **neuron)
            reach = conv_reach(len(layer["weight"]), (len(layer["weight"][0][0]),
                               len(layer["weight"][0][0][0])), layer["input_shape"],
                               layer["stride"], layer["padding"])
            synops = sum(e * r for e, r in zip(per_input, reach, strict=True))
        else:
            spikes, membranes = run_layer(layer["weight"], layer["bias"], layer["theta"], x,
                                          **neuron)
            synops = sum(per_input) * len(layer["weight"])
        if layer["kind"] != "sumpool":
            spikes_are_events = True
        outputs.append((spikes, membranes, sum(per_input), synops))
        x = spikes
    if not layer.get("fires", True):
        readout = membranes[-1]
    elif layer.get("fire_mode", "threshold") == "radix":
        readout = [sum(s[i] << t for t, s in enumerate(spikes)) for i in range(len(spikes[0]))]
    else:
        readout = [sum(s[i] for s in spikes) for i in range(len(spikes[0]))]
    return outputs, readout


# --- whole networks of every layer kind, batched in float64 -------------------------------------

def pool_as_dense(input_shape, kernel, stride=None, padding=0):
    """The 0/1 matrix ``[fan_out][fan_in]`` of sum pooling (window sums, flat C-major)."""
    (kh, kw) = _pair(kernel)
    (sh, sw), (ph, pw) = _pair(kernel if stride is None else stride), _pair(padding)
    channels, height, width = input_shape
    h_out, w_out = window_count(height, kh, sh, ph), window_count(width, kw, sw, pw)
    matrix = [[0] * (channels * height * width) for _ in range(channels * h_out * w_out)]
    for c in range(channels):
        for y in range(h_out):
            for x in range(w_out):
                row = matrix[(c * h_out + y) * w_out + x]
                for i in range(kh):
                    for j in range(kw):
                        yy, xx = y * sh + i - ph, x * sw + j - pw
                        if 0 <= yy < height and 0 <= xx < width:
                            row[(c * height + yy) * width + xx] += 1
    return matrix


def run_layers_float64(layers: list[dict], frames: torch.Tensor, timesteps: int):
    """:func:`run_network_float64` for layers of every kind: keyword dicts of ``DenseLayer``,
    ``ConvLayer`` (a 4-D ``weight`` and ``input_shape``, ``stride``, ``padding``) and
    ``SumPoolLayer`` (``kernel``, no weight).

    A convolution is run as the dense matrix of :func:`conv_as_dense` (plain loops) with its
    bias repeated per position, sum pooling as the 0/1 matrix of :func:`pool_as_dense`; the
    neuron is the contract's, step by step, in float64 (exact: every value is an integer below
    2**53). Returns ``(output, outputs)``: the readout of the last layer and every layer's
    output ``int64[batch, T, fan_out]`` (spikes, or a pooling layer's counts).
    """
    x = frames.to(torch.float64)
    outputs = []
    spikes = v = None
    for layer in layers:
        if "kernel" in layer:  # sum pooling: no neurons, no state
            matrix = torch.tensor(pool_as_dense(layer["input_shape"], layer["kernel"],
                                                layer.get("stride"), layer.get("padding", 0)),
                                  dtype=torch.float64)
            x = x @ matrix.T
            outputs.append(x.to(torch.int64))
            continue
        weight = layer["weight"]
        if weight.dim() == 4:
            matrix = torch.tensor(conv_as_dense(weight.tolist(), layer["input_shape"],
                                                layer.get("stride", 1), layer.get("padding", 0)),
                                  dtype=torch.float64)
            bias = layer["bias"].to(torch.float64).repeat_interleave(len(matrix) // len(weight))
        else:
            matrix, bias = weight.to(torch.float64), layer["bias"].to(torch.float64)
        current = x @ matrix.T + bias
        spikes, v = _neurons_float64(current, layer, timesteps)
        outputs.append(spikes.to(torch.int64))
        x = spikes
    out = _readout_float64(layers[-1], spikes, v, timesteps)
    return out.to(torch.int64), outputs


# --- compare and reset modes (docs/contract.md, "One layer, one timestep") ---------------------

def run_layer_modes(weight, bias, theta, inputs, *, leak_shift=0, fire_mode="threshold",
                    v_init=0, fires=True, v_bits=16, compare=">=", reset="subtract"):
    """:func:`run_layer` with the threshold comparison (``">="`` or ``">"``) and the reset
    (``"subtract"``: ``V -= theta``, or ``"zero"``: ``V = 0``) chosen. Radix neurons always
    subtract their digit; compare is ignored for them."""
    low, high = -(2 ** (v_bits - 1)), 2 ** (v_bits - 1) - 1
    v = [v_init] * len(weight)
    spikes, membranes = [], []
    for t, frame in enumerate(inputs):
        s_t = [0] * len(weight)
        for i, row in enumerate(weight):
            if t > 0:
                v[i] = v[i] // (2 ** leak_shift)
            total = v[i] + bias[i] + sum(w * x for w, x in zip(row, frame, strict=True))
            v[i] = min(high, max(low, total))
            if not fires:
                continue
            if fire_mode == "radix":
                s_t[i] = v[i] % 2
                v[i] -= s_t[i]
                continue
            if (v[i] > theta[t]) if compare == ">" else (v[i] >= theta[t]):
                s_t[i] = 1
                v[i] = 0 if reset == "zero" else v[i] - theta[t]
        spikes.append(s_t)
        membranes.append(list(v))
    return spikes, membranes
