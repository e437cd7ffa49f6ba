#!/usr/bin/env python3
"""The contract from another language: a Python client generated from proto/ with grpcio-tools
embeds a JPEG through `reid serve embedder` and gets a unit-length vector of the advertised
dimension. Usage: grpc_client.py PATH_TO_REID_BINARY
"""
import importlib.resources
import math
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from grpc_tools import protoc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def generate(out: Path) -> None:
    include = str(importlib.resources.files("grpc_tools") / "_proto")
    protos = sorted(str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto/reid/v1").glob("*.proto"))
    args = ["protoc", f"-I{ROOT / 'proto'}", f"-I{include}", f"--python_out={out}", f"--grpc_python_out={out}", *protos]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, str(out))


def start(binary: str) -> tuple[subprocess.Popen, str]:
    args = [binary, "serve", "embedder", "--listen", "127.0.0.1:0", "--model-dir", str(ROOT / "models")]
    proc, addr, _ = serving.start(args, r"serving grpc addr=(\S+)", {"RUST_LOG": "info", "PATH": "/usr/bin:/bin"})
    return proc, addr


def main() -> None:
    binary = sys.argv[1]
    passed = failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        from reid.v1 import common_pb2, embedder_pb2, embedder_pb2_grpc

        proc, addr = start(binary)
        try:
            stub = embedder_pb2_grpc.EmbedderServiceStub(grpc.insecure_channel(addr))
            info = stub.GetModel(embedder_pb2.GetModelRequest()).model
            jpeg = (ROOT / ".cache/data/face_recognition/test_images/obama.jpg").read_bytes()
            reply = stub.Embed(embedder_pb2.EmbedRequest(images=[common_pb2.Image(encoded=jpeg)]))
            vector = list(reply.embeddings[0].values)
            checks = {
                "dimension matches GetModel": len(vector) == info.ref.dimension == reply.model.dimension > 0,
                "unit length": abs(math.sqrt(sum(v * v for v in vector)) - 1.0) < 1e-4,
                "version named": reply.model.version == info.ref.version != "",
            }
            try:
                stub.Embed(embedder_pb2.EmbedRequest(images=[common_pb2.Image(encoded=b"not a jpeg")]))
                checks["corrupt image refused"] = False
            except grpc.RpcError as e:
                checks["corrupt image refused"] = e.code() == grpc.StatusCode.INVALID_ARGUMENT
            for name, ok in checks.items():
                print(f"grpcio client: {name}: {'ok' if ok else 'FAILED'}")
                passed += ok
                failed += not ok
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(30)
        print(f"grpcio client: embedder exited with {code} after SIGTERM")
        failed += code != 0
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
