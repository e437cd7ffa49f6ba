"""A simulated operator, to measure what `reid adapt` makes of feedback about tracklets
(docs/evaluation.md): reads what `reid eval mtmc --explain` printed (each identity's tracklets
with their ground-truth person) and, through the identity service's Feedback RPC, does what an
operator going through the console's identity pages would do with a mixed identity: confirms up
to CONFIRM tracklets of its own person (its majority) and rejects every tracklet of someone else.

Usage: .venv/bin/python scripts/simulated_operator.py EXPLAIN ADDR [CONFIRM]
"""
import re
import sys
import tempfile
from collections import Counter
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests/python"))
from grpc_client import generate  # noqa: E402


def main() -> None:
    explain, addr = sys.argv[1], sys.argv[2]
    confirm = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    identities: dict[str, list[tuple[int, str, str]]] = {}
    current = None
    for line in open(explain):
        m = re.match(r"\s+identity (\S+)", line)
        if m:
            current = m[1]
            identities[current] = []
            continue
        m = re.match(r"\s+person\s+(\d+)\s+(\S+)\s+(\S+)\s+frames", line)
        if m and current:
            identities[current].append((int(m[1]), m[2], m[3]))
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        from reid.v1 import identity_pb2, identity_pb2_grpc

        stub = identity_pb2_grpc.IdentityServiceStub(grpc.insecure_channel(addr))
        counts = Counter()
        for identity, tracklets in identities.items():
            people = Counter(p for p, _, _ in tracklets)
            own = people.most_common(1)[0][0]
            confirmed = 0
            for person, camera, track in tracklets:
                if person == own and confirmed < confirm and len(people) > 1:
                    kind = identity_pb2.FEEDBACK_KIND_CONFIRM
                    confirmed += 1
                elif person != own:
                    kind = identity_pb2.FEEDBACK_KIND_REJECT
                else:
                    continue
                stub.Feedback(identity_pb2.FeedbackRequest(kind=kind, identity_a=identity, camera_id=camera, track_id=track))
                counts[kind] += 1
        print(f"confirmed {counts[identity_pb2.FEEDBACK_KIND_CONFIRM]}, rejected {counts[identity_pb2.FEEDBACK_KIND_REJECT]}")


if __name__ == "__main__":
    main()
