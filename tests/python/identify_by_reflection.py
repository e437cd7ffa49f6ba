#!/usr/bin/env python3
"""Identify from outside with nothing but grpcio and server reflection: no stubs, no .proto files.
Starts `reid serve embedder` and `reid serve identity` with an API key, discovers
reid.v1.IdentityService by reflection, enrolls a photo and identifies it, every call (reflection
included) carrying the key; without the key even reflection is refused.
Usage: identify_by_reflection.py PATH_TO_REID_BINARY
"""
import base64
import collections
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests/python"))
import serving  # noqa: E402

KEY = "reflection-check-key"


class _Details(
    collections.namedtuple("_Details", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class ApiKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer KEY` to every call made on the channel."""

    def __init__(self, key: str) -> None:
        self.header = ("authorization", f"Bearer {key}")

    def _with_key(self, d):
        metadata = list(d.metadata or []) + [self.header]
        return _Details(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready, d.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._with_key(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._with_key(details), requests)


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    env = {"RUST_LOG": "info", "PATH": "/usr/bin:/bin", "REID_API_KEY": KEY}
    proc, addr, _ = serving.start(args, r"serving grpc addr=(\S+)", env)
    return proc, addr


def method(channel: grpc.Channel, service: str, name: str):
    """A callable for SERVICE/NAME and its request class, found by reflection."""
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
    m = pool.FindServiceByName(service).methods_by_name[name]
    request, response = message_factory.GetMessageClass(m.input_type), message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{name}", request_serializer=request.SerializeToString, response_deserializer=response.FromString
    )
    return lambda body: json_format.MessageToDict(call(json_format.ParseDict(body, request())))


def main() -> None:
    binary = sys.argv[1]
    checks = {}
    photo = base64.b64encode((ROOT / ".cache/data/face_recognition/test_images/obama.jpg").read_bytes()).decode()
    with tempfile.TemporaryDirectory() as tmp:
        embedder, embedder_addr = start(
            [binary, "serve", "embedder", "--listen", "127.0.0.1:0", "--model-dir", str(ROOT / "models")]
        )
        identity, addr = start(
            [binary, "serve", "identity", "--listen", "127.0.0.1:0", "--data", tmp, "--embedder", embedder_addr]
        )
        try:
            try:
                method(grpc.insecure_channel(addr), "reid.v1.IdentityService", "Identify")
                checks["reflection without the key refused"] = False
            except grpc.RpcError as e:
                checks["reflection without the key refused"] = e.code() == grpc.StatusCode.UNAUTHENTICATED
            channel = grpc.intercept_channel(grpc.insecure_channel(addr), ApiKey(KEY))
            enroll = method(channel, "reid.v1.IdentityService", "Enroll")
            identify = method(channel, "reid.v1.IdentityService", "Identify")
            enrolled = enroll({"name": "Barack", "images": [{"encoded": photo}]})
            answer = identify({"probes": [{"image": {"encoded": photo}}]})["results"][0]
            checks["enrolled by reflection"] = bool(enrolled.get("identityId"))
            checks["identified as the enrolled identity"] = (
                answer.get("decision") == "DECISION_KNOWN" and answer.get("identityId") == enrolled.get("identityId")
            )
        finally:
            for proc in (identity, embedder):
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
    for name, ok in checks.items():
        print(f"grpcio reflection client: {name}: {'ok' if ok else 'FAILED'}")
    failed = sum(not ok for ok in checks.values())
    print(f"{len(checks) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
