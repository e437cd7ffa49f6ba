#!/usr/bin/env python3
"""The reference for reid's trainer: the seed's experiment trained with pytorch-metric-learning.

Same architecture (the small CNN, 28x28 -> 10-d, L2-normalised), same split (Fashion-MNIST
classes 0-4 train, unseen classes 5-9 evaluate), same batches (P classes x K images,
pytorch-metric-learning's MPerClassSampler), same distance (Euclidean on unit vectors, PML's
LpDistance), same miners (PML's TripletMarginMiner "semihard" and BatchHardMiner; "random" is one
random positive and negative per anchor, which PML lacks) and the same losses:
- triplet: PML's TripletMarginLoss with a MeanReducer, max(Dp - Dn + m, 0) averaged over triplets;
- contrastive: 1/2 [y D^2 + (1 - y) max(m - D, 0)^2] over the distinct pairs of the mined triplets,
  written out here because PML's ContrastiveLoss is a different (unsquared) hinge.
Same optimiser (Adam, lr 1e-3), same epochs, same evaluation (leave-one-out Recall@1 and mAP on
cosine distances). Prints one JSON line per epoch and a final one.

Usage: metric_learning_reference.py --loss triplet --miner batch_hard [--epochs 5] [--p 5 --k 8]
"""
import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners, reducers, samplers


def idx(path: Path) -> np.ndarray:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(root: Path, split: str, classes: list[int]):
    images = idx(root / f"{split}-images-idx3-ubyte.gz")
    labels = idx(root / f"{split}-labels-idx1-ubyte.gz").astype(np.int64)
    keep = np.isin(labels, classes)
    x = torch.from_numpy(images[keep].astype(np.float32) / 255.0).unsqueeze(1)
    return (x - 0.5) / 0.5, torch.from_numpy(labels[keep])


class SmallCnn(torch.nn.Module):
    """reid_model::nets::SmallCnn, layer for layer."""

    def __init__(self, dim: int = 10):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = torch.nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = torch.nn.Linear(64 * 7 * 7, 256)
        self.fc2 = torch.nn.Linear(256, dim)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def random_triplets(labels: torch.Tensor, generator: torch.Generator):
    a, p, n = [], [], []
    for i in range(len(labels)):
        pos = torch.nonzero((labels == labels[i]) & (torch.arange(len(labels)) != i)).flatten()
        neg = torch.nonzero(labels != labels[i]).flatten()
        if len(pos) and len(neg):
            a.append(i)
            p.append(pos[torch.randint(len(pos), (1,), generator=generator)].item())
            n.append(neg[torch.randint(len(neg), (1,), generator=generator)].item())
    return torch.tensor(a), torch.tensor(p), torch.tensor(n)


def distinct_pairs(a, p, n):
    seen, pa, pb, y = set(), [], [], []
    for (x, z, same) in [(i, j, 1.0) for i, j in zip(a.tolist(), p.tolist())] + \
                        [(i, j, 0.0) for i, j in zip(a.tolist(), n.tolist())]:
        key = (min(x, z), max(x, z))
        if key not in seen:
            seen.add(key)
            pa.append(x)
            pb.append(z)
            y.append(same)
    return torch.tensor(pa), torch.tensor(pb), torch.tensor(y)


@torch.no_grad()
def evaluate(net, x, labels):
    net.eval()
    e = F.normalize(torch.cat([net(c) for c in x.split(512)]), dim=1)
    net.train()
    d = 1 - e @ e.T
    d.fill_diagonal_(float("inf"))
    order = d.argsort(dim=1)[:, :-1]  # the query itself (inf) ranks last and is dropped
    hits = (labels[order] == labels[:, None]).float()
    r1 = hits[:, 0].mean().item()
    precision = hits.cumsum(1) / torch.arange(1, hits.shape[1] + 1)
    ap = (precision * hits).sum(1) / hits.sum(1).clamp(min=1)
    return r1, ap.mean().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--loss", choices=["contrastive", "triplet"], required=True)
    ap.add_argument("--miner", choices=["random", "semi_hard", "batch_hard"], required=True)
    ap.add_argument("--margin", type=float, default=0.2)
    ap.add_argument("--p", type=int, default=5)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    xtrain, ytrain = load(Path(args.data), "train", [0, 1, 2, 3, 4])
    xeval, yeval = load(Path(args.data), "t10k", [5, 6, 7, 8, 9])
    batch = args.p * args.k
    sampler = samplers.MPerClassSampler(ytrain, m=args.k, batch_size=batch, length_before_new_iter=len(ytrain))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xtrain, ytrain), batch_size=batch, sampler=sampler)
    distance = distances.LpDistance(normalize_embeddings=True)
    miner = {
        "semi_hard": miners.TripletMarginMiner(margin=args.margin, type_of_triplets="semihard", distance=distance),
        "batch_hard": miners.BatchHardMiner(distance=distance),
        "random": None,
    }[args.miner]
    triplet_loss = losses.TripletMarginLoss(margin=args.margin, distance=distance, reducer=reducers.MeanReducer())
    net = SmallCnn()
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    r1, mAP = evaluate(net, xeval, yeval)
    print(json.dumps({"epoch": 0, "rank1": r1, "mAP": mAP}), flush=True)
    for epoch in range(1, args.epochs + 1):
        start, active, mined = time.perf_counter(), 0, 0
        for x, y in loader:
            emb = net(x)
            triplets = random_triplets(y, g) if miner is None else miner(emb, y)
            if len(triplets[0]) == 0:
                continue
            if args.loss == "triplet":
                loss = triplet_loss(emb, y, triplets)
                with torch.no_grad():
                    dm = distance(emb)
                    per = (dm[triplets[0], triplets[1]] - dm[triplets[0], triplets[2]] + args.margin).clamp(min=0)
            else:
                a, b, same = distinct_pairs(*triplets)
                d = distance(emb)[a, b]
                per = 0.5 * (same * d.pow(2) + (1 - same) * (args.margin - d).clamp(min=0).pow(2))
                loss = per.mean()
            active += int((per > 0).sum())
            mined += len(per)
            opt.zero_grad()
            loss.backward()
            opt.step()
        seconds = time.perf_counter() - start
        r1, mAP = evaluate(net, xeval, yeval)
        print(json.dumps({"epoch": epoch, "loss_kind": args.loss, "miner": args.miner, "seconds": seconds,
                          "active_fraction": active / max(mined, 1), "rank1": r1, "mAP": mAP}), flush=True)


if __name__ == "__main__":
    main()
