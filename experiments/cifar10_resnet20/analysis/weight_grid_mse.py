#!/usr/bin/env python3
"""weight_grid_mse.py: how well each low-bit weight grid fits the float model's conv weights.

For every output channel of the 3x3 and 1x1 convs between the stem and the classifier (the layers the
study puts at k bits), the step s of least squared error is found by search (200 steps from max|w|/100
to max|w|) for each grid of levels (in units of s), and the error is given relative to the channel's mean
square weight; the table is the mean over channels. Grids: narrow (symmetric with zero, qatlab's default),
full ([-2^(k-1), 2^(k-1) - 1], LSQ's, the study's at 3 and 2 bits) and mid-rise (symmetric without zero,
+-0.5, +-1.5, ... : DoReFa's, PACT's weights).
  /usr/bin/python3 analysis/weight_grid_mse.py runs/recipe_swa/checkpoint.h5   (needs h5py and numpy)
"""
import sys

import h5py
import numpy as np

GRIDS = {
    "W2 narrow [-1, 1]": np.array([-1.0, 0, 1]),
    "W2 full [-2, 1]": np.array([-2.0, -1, 0, 1]),
    "W2 mid-rise +-0.5, +-1.5": np.array([-1.5, -0.5, 0.5, 1.5]),
    "W3 narrow [-3, 3]": np.arange(-3.0, 4),
    "W3 full [-4, 3]": np.arange(-4.0, 4),
    "W3 mid-rise +-0.5 .. +-3.5": np.arange(-3.5, 4),
    "W4 narrow [-7, 7]": np.arange(-7.0, 8),
    "W4 full [-8, 7]": np.arange(-8.0, 8),
    "W4 mid-rise +-0.5 .. +-7.5": np.arange(-7.5, 8),
}


def least_error(w, levels):
    best = np.inf
    for s in np.linspace(np.abs(w).max() / 100, np.abs(w).max(), 200):
        q = levels[np.argmin(np.abs(w[:, None] / s - levels[None, :]), axis=1)] * s
        best = min(best, float(((w - q) ** 2).mean()))
    return best


def main(path):
    with h5py.File(path, "r") as f:
        state = f["model/state"]
        names = [n for n in state if n.endswith(".weight") and len(state[n].shape) == 4 and not n.startswith("stem")]
        totals = dict.fromkeys(GRIDS, 0.0)
        channels = 0
        for name in names:
            weights = state[name][()].reshape(state[name].shape[0], -1)
            for w in weights:
                mean_square = float((w ** 2).mean())
                for grid, levels in GRIDS.items():
                    totals[grid] += least_error(w, levels) / mean_square
                channels += 1
    print(f"{path}: {len(names)} convs, {channels} output channels")
    print("| grid | squared error / mean square weight (mean over channels) |")
    print("| --- | --- |")
    for grid in GRIDS:
        print(f"| {grid} | {totals[grid] / channels:.4f} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: weight_grid_mse.py CHECKPOINT.h5")
    main(sys.argv[1])
