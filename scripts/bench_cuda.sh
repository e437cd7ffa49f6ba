#!/usr/bin/env bash
# The embedder benchmark on a CUDA machine (for the `device` tool, or any GPU box): set up,
# build in release, confirm libtorch sees the GPU, then `reid bench embed`, which compares the
# gRPC service against PyTorch eager on the same device. Record the figures in docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release -p reid-cli
.venv/bin/python -c 'import torch; print("torch sees CUDA:", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
target/release/reid bench embed --seconds "${SECONDS_PER_LEVEL:-10}" --concurrency 1,8,32,64 "$@"
