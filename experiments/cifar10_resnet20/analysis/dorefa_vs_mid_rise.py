#!/usr/bin/env python3
"""dorefa_vs_mid_rise.py: how far DoReFa's weight quantizer (PACT's paper quantizes weights with it) is from
a min/max mid-rise grid (qatlab's `--weight-range mid-rise` with a min/max weight observer) on the float
model's conv weights.

DoReFa maps a weight w of a tensor W to the level (2 round((L (t + 1)) / 2) - L) / L with
t = tanh(w) / max|tanh(W)| and L = 2^k - 1: the mid-rise levels +-1/L, +-3/L, ..., +-1, placed on tanh(w)
scaled so that the largest weight gets the outer level. The min/max mid-rise grid places w / max|W| on the
same levels. The two give the same level wherever tanh is close enough to linear, as it is for small weights.
For every output channel of the 3x3 and 1x1 convs between the stem and the classifier (per channel, as the
study's per-channel cells; per tensor, as DoReFa's paper), this counts the weights whose level differs.
  /usr/bin/python3 analysis/dorefa_vs_mid_rise.py runs/recipe_swa/checkpoint.h5   (needs h5py and numpy)
"""
import sys

import h5py
import numpy as np


def level(t, bits):
    steps = 2**bits - 1
    return 2 * np.round(steps * (t + 1) / 2) - steps


def main(path):
    with h5py.File(path, "r") as f:
        state = f["model/state"]
        names = [n for n in state if n.endswith(".weight") and len(state[n].shape) == 4 and not n.startswith("stem")]
        weights = {n: state[n][()].reshape(state[n].shape[0], -1).astype(np.float64) for n in names}
    largest = np.concatenate([np.abs(w).max(axis=1) for w in weights.values()])
    print(f"{path}: {len(names)} convs, {largest.size} output channels, {sum(w.size for w in weights.values())} weights")
    print(f"largest |w| of a channel: median {np.median(largest):.3f}, 99th percentile "
          f"{np.percentile(largest, 99):.3f}, largest {largest.max():.3f} (tanh(x) / x there: "
          f"{np.tanh(np.median(largest)) / np.median(largest):.4f}, {np.tanh(largest.max()) / largest.max():.4f})")
    print("| bits | range per | weights whose level differs, DoReFa vs min/max mid-rise |")
    print("| --- | --- | --- |")
    for bits in (2, 3, 4):
        for per in ("channel", "tensor"):
            differ = total = 0
            for w in weights.values():
                axis = 1 if per == "channel" else None
                a = np.abs(w).max(axis=axis, keepdims=True)
                differ += int((level(np.tanh(w) / np.tanh(a), bits) != level(w / a, bits)).sum())
                total += w.size
            print(f"| {bits} | {per} | {differ} of {total} ({100 * differ / total:.3f} %) |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: dorefa_vs_mid_rise.py CHECKPOINT.h5")
    main(sys.argv[1])
