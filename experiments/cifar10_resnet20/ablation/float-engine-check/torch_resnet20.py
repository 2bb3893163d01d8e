#!/usr/bin/python3
"""float_recipe.ini's ResNet-20 recipe, shortened to --epochs, in PyTorch: the comparison run for qatlab's
float training (README.md here). Everything qatlab does is mirrored: data (the same binary files, the same
normalisation), augmentation (4-pixel zero-padded random crop, flip, 16x16 cutout to 0 after normalising),
network (nn/models/resnet20.yaml: option-B projection shortcuts, He-normal fan-out conv weights, PyTorch's
default linear and batch-norm settings), optimiser (SGD, Nesterov 0.9, weight decay 5e-4 on conv and linear
weights only), schedule (one linear warm-up epoch from 0.1x, then cosine to 0, per iteration).

  /usr/bin/python3 torch_resnet20.py --data ~/.cache/qatlab/cifar-10-batches-bin --epochs 10 --seed 1 --out torch-s1.csv
"""
import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


def load(path, names):
    raw = np.concatenate([np.fromfile(os.path.join(path, n), dtype=np.uint8).reshape(-1, 3073) for n in names])
    return raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0].astype(np.int64)


def normalise(x):
    return (x.astype(np.float32) / 255.0 - MEAN[None, :, None, None]) / STD[None, :, None, None]


def augment(x, rng, pad=4, cutout=16):
    n = x.shape[0]
    padded = np.zeros((n, 3, 32 + 2 * pad, 32 + 2 * pad), dtype=np.uint8)
    padded[:, :, pad:pad + 32, pad:pad + 32] = x
    out = np.empty_like(x)
    oy = rng.integers(0, 2 * pad + 1, n)
    ox = rng.integers(0, 2 * pad + 1, n)
    flip = rng.integers(0, 2, n) == 1
    for i in range(n):
        img = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        out[i] = img[:, :, ::-1] if flip[i] else img
    out = normalise(out)
    cy = rng.integers(0, 32, n)
    cx = rng.integers(0, 32, n)
    for i in range(n):
        y0, x0 = max(cy[i] - cutout // 2, 0), max(cx[i] - cutout // 2, 0)
        y1, x1 = min(cy[i] - cutout // 2 + cutout, 32), min(cx[i] - cutout // 2 + cutout, 32)
        out[i, :, y0:y1, x0:x1] = 0.0
    return out


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet20(nn.Module):
    def __init__(self, classes=10):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        layers, cin = [], 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            for b in range(3):
                layers.append(Block(cin, width, stride if b == 0 else 1))
                cin = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(64, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


def lr_at(i, iters, epochs, base=0.1, warmup=1, start=0.1):
    w = warmup * iters
    if i < w:
        return base * (start + (1 - start) * i / w)
    j, total = i - w, (epochs - warmup) * iters
    return base * (1 + math.cos(math.pi * min(j, total) / total)) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    xtr, ytr = load(a.data, [f"data_batch_{i}.bin" for i in range(1, 6)])
    xte, yte = load(a.data, ["test_batch.bin"])
    xte_t, yte_t = torch.from_numpy(normalise(xte)), torch.from_numpy(yte)
    model = ResNet20()
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    rest = [p for n, p in model.named_parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    batch, iters = 128, (len(ytr) + 127) // 128
    with open(a.out, "w") as f:
        f.write("epoch,lr,train_loss,train_acc,test_loss,test_acc,epoch_seconds\n")
    it = 0
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        model.train()
        order = rng.permutation(len(ytr))
        loss_sum, correct = 0.0, 0
        for b in range(iters):
            idx = order[b * batch:(b + 1) * batch]
            x, y = torch.from_numpy(augment(xtr[idx], rng)), torch.from_numpy(ytr[idx])
            lr = lr_at(it, iters, a.epochs)
            for g in opt.param_groups:
                g["lr"] = lr
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
            it += 1
        model.eval()
        with torch.no_grad():
            tl, tc = 0.0, 0
            for b in range(0, len(yte), 500):
                out = model(xte_t[b:b + 500])
                tl += F.cross_entropy(out, yte_t[b:b + 500], reduction="sum").item()
                tc += (out.argmax(1) == yte_t[b:b + 500]).sum().item()
        row = (epoch, lr, loss_sum / len(ytr), correct / len(ytr), tl / len(yte), tc / len(yte), time.time() - t0)
        with open(a.out, "a") as f:
            f.write("%d,%g,%.6g,%.5f,%.6g,%.4f,%.1f\n" % row)
        print("epoch %d lr %.4g train loss %.4f acc %.2f %% test loss %.4f acc %.2f %% %.0f s" %
              (row[0], row[1], row[2], 100 * row[3], row[4], 100 * row[5], row[6]), flush=True)


if __name__ == "__main__":
    main()
