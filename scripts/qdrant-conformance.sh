#!/usr/bin/env bash
# Runs reid's Qdrant server suites against a Qdrant server binary you have (none can be
# downloaded by reid's build): the vector store's conformance suite and the identity service's
# two-replica test, once without an API key and once with one, each on a fresh server with its
# storage in a temporary folder. Nothing else on the machine is touched.
#
#   scripts/qdrant-conformance.sh /path/to/qdrant          # e.g. built with `cargo build --release`
#                                                          # in a checkout of qdrant/qdrant
# Ports: QDRANT_HTTP_PORT (default 16333) and QDRANT_GRPC_PORT (default 16334).
set -euo pipefail

qdrant=${1:?usage: scripts/qdrant-conformance.sh /path/to/qdrant}
[ -x "$qdrant" ] || { echo "not an executable: $qdrant" >&2; exit 2; }
http_port=${QDRANT_HTTP_PORT:-16333}
grpc_port=${QDRANT_GRPC_PORT:-16334}
cd "$(dirname "$0")/.."

version=$("$qdrant" --version 2>/dev/null || echo "qdrant (version unknown)")
scratch=$(mktemp -d)
server=
stop() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    server=
}
trap 'stop; rm -rf "$scratch"' EXIT

start() { # $1: API key, or empty
    rm -rf "$scratch/storage" && mkdir -p "$scratch/storage"
    QDRANT__STORAGE__STORAGE_PATH="$scratch/storage" \
    QDRANT__STORAGE__SNAPSHOTS_PATH="$scratch/snapshots" \
    QDRANT__SERVICE__HTTP_PORT=$http_port QDRANT__SERVICE__GRPC_PORT=$grpc_port \
    QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__API_KEY="$1" QDRANT__TELEMETRY_DISABLED=true \
        "$qdrant" >"$scratch/server.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
        if curl -fsS "http://127.0.0.1:$http_port/healthz" >/dev/null 2>&1; then return 0; fi
        kill -0 "$server" 2>/dev/null || break
        sleep 0.2
    done
    echo "the server did not come up; its log:" >&2
    cat "$scratch/server.log" >&2
    exit 1
}

suites() {
    cargo test -p reid-vector-store --test conformance -- --test-threads 2
    cargo test -p reid-identity --test replicas -- --test-threads 1
}

echo "== $version, no API key"
start ""
REID_QDRANT_URL="http://127.0.0.1:$grpc_port" suites
stop

echo "== $version, with an API key"
key=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
start "$key"
REID_QDRANT_URL="http://127.0.0.1:$grpc_port" REID_QDRANT_API_KEY="$key" suites
stop

echo "passed against $version, with and without an API key"
