"""A naive scalar re-implementation of docs/contract.md, written independently of sw.golden.

Plain Python integers, one neuron and one timestep at a time, no tensors: slow and obvious, so
that the batched golden model can be checked against something that shares none of its code.
"""


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
