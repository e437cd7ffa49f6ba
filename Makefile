# reid: `make demo` runs what exists of the pipeline on the embedded default; `make test` passes
# the tests. Both set up whatever is missing first (scripts/setup.sh).

CARGO ?= cargo
SHELL := /bin/bash
export RUSTUP_AUTO_INSTALL ?= 0

.PHONY: setup build release demo test lint bench experiment person-model clean-models

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --workspace

release: setup
	$(CARGO) build --release -p reid-cli

demo: release
	target/release/reid demo

# Ends with one "N passed, N failed" line over every cargo test binary.
test: setup
	COMPOSE_PROFILES=gpu docker-compose -f docker-compose.yml config -q
	COMPOSE_PROFILES=cpu docker-compose -f docker-compose.yml config -q
	docker-compose -f docker-compose.yml -f deploy/qdrant-cluster.yml config -q
	/usr/bin/python3 tests/deploy/check_manifests.py deploy/k8s
	/usr/bin/python3 tests/structure/check_layout.py
	$(CARGO) build -p reid-cli
	.venv/bin/python tests/python/grpc_client.py target/debug/reid
	.venv/bin/python tests/python/identify_by_reflection.py target/debug/reid
	.venv/bin/python tests/python/motmetrics_check.py target/debug/reid 60
	.venv/bin/python tests/python/console_browser.py target/debug/reid
	set -o pipefail; $(CARGO) test --workspace 2>&1 | tee .cache/cargo-test.log
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "%d passed, %d failed\n", passed, failed }' .cache/cargo-test.log

lint: setup
	/usr/bin/python3 tests/structure/check_layout.py
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: release
	target/release/reid bench embed
	target/release/reid bench identity --latent-dim 64
	target/release/reid bench ingest

# reid's default person model (models/person-vtest, committed): vtest.avi played as the demo's
# two cameras, pseudo-identities clustered from their tracklets, camera-change augmentation,
# 256x128 (configs/person-vtest.toml; about 15 minutes on 2 cores).
person-model: release
	rm -rf data/vtest2-tracklets runs/person-vtest-v2
	target/release/reid tracklets export --config configs/vtest-cameras.toml --out data/vtest2-tracklets
	target/release/reid train --config configs/person-vtest.toml --run-id person-vtest-v2 --publish person-vtest --half

# The seed's metric-learning experiment against pytorch-metric-learning: writes
# docs/metric-learning.md and docs/img/ (about 25 minutes on 2 cores).
experiment: release
	.venv/bin/pip install -q --disable-pip-version-check pytorch-metric-learning==2.9.0
	target/release/reid experiment metric-learning --epochs 5

clean-models:
	find models -mindepth 1 -maxdepth 1 -type d ! -name person-vtest -exec rm -rf {} +
