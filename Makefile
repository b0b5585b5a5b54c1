# Two commands matter (README): `make demo` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TOOLS  := .tools/node_modules/@foundry-rs
FOUNDRY_VERSION ?= 1.7.1

.PHONY: all setup tools browser demo demo-simulate bench-devnet bench-paillier test lint format bench bench-robust bench-robust-network bench-vs-flower bench-agg bench-gas bench-secure bench-incentives bench-dp bench-cli bench-blobs fuzz clean

all: test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first and pinned by constraints.txt: a bare `torch` would pull CUDA.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

setup: $(STAMP) tools browser

# anvil and cast (foundry) for the chain tests, from the npm registry.
tools: .tools/.installed-$(FOUNDRY_VERSION)

.tools/.installed-$(FOUNDRY_VERSION):
	mkdir -p .tools
	npm install --no-save --no-audit --no-fund --prefix .tools \
		@foundry-rs/anvil-linux-amd64@$(FOUNDRY_VERSION) @foundry-rs/cast-linux-amd64@$(FOUNDRY_VERSION)
	$(TOOLS)/anvil-linux-amd64/bin/anvil --version >/dev/null
	$(TOOLS)/cast-linux-amd64/bin/cast --version >/dev/null
	touch $@

# Headless Chromium and its driver for the explorer's browser test (Debian packages; selenium
# itself comes with the test extra).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver)

# A local network: py-evm chain, FLChain contract, a task, 5 node processes (1 Byzantine:
# Multi-Krum tolerates f only when n > 2f + 2),
# 5 rounds; ends with the ledger summary.
demo: $(STAMP)
	$(BIN)/flchain devnet up --dir .flchain-devnet --force --nodes 5 --byzantine 1 --attack signflip \
		--rule multikrum --rounds 5

# The same experiment in one process, for quick looks.
demo-simulate: $(STAMP)
	$(BIN)/flchain simulate --nodes 10 --rounds 10 --byzantine 3 --attack signflip --rule multikrum

# Two workers, one test file each at a time (module-scoped devnets stay in one worker): the
# devnet tests spend most of their time waiting out phase windows, so the other worker's
# CPU-bound tests fill that time.
test: $(STAMP) tools browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(BIN)/ruff check flchain aggregation attacks models contracts devnet node crypto tests benchmarks
	$(BIN)/ruff format --check flchain aggregation attacks models contracts devnet node crypto tests benchmarks

format: $(STAMP)
	$(BIN)/ruff check --fix flchain aggregation attacks models contracts devnet node crypto tests benchmarks
	$(BIN)/ruff format flchain aggregation attacks models contracts devnet node crypto tests benchmarks

bench: bench-agg bench-robust bench-robust-network bench-vs-flower bench-gas bench-paillier bench-devnet bench-secure bench-incentives bench-cli bench-blobs

bench-robust: $(STAMP)
	$(BIN)/python benchmarks/bench_robust.py

# The robustness matrix on the network: devnets of 10 node processes, 3 Byzantine, every update
# and data attack x fedavg, multikrum, median, bulyan, sageflow, siren, side by side with the
# simulation on the same seed: 54 devnets and 54 simulations of 5 rounds, two at a time. Measured
# on 2 shared cores: a devnet 2.5-5 min (zero's about 14: two of its nodes wait out each submit
# window), a simulation 10-60 s, so 1.5-2.5 hours in all (cached in .bench-cache/: an
# interrupted run resumes). `python benchmarks/bench_robust_network.py --quick`: 8 cells, ~20 min.
bench-robust-network: $(STAMP)
	$(BIN)/python benchmarks/bench_robust_network.py

# Flower lives in its own environment (its pins differ from ours; `make test` never needs it).
# Its clients train with flchain's pipeline, so flchain goes in without dependencies.
FLOWER_VENV := .venv-flower
$(FLOWER_VENV)/.installed: constraints.txt pyproject.toml
	$(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install -q --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install -q -c constraints.txt torch==2.13.0
	$(FLOWER_VENV)/bin/python -m pip install -q -c constraints.txt "flwr[simulation]==1.42.0" \
		numpy scikit-learn safetensors dp-accounting
	$(FLOWER_VENV)/bin/python -m pip install -q --no-deps -e .
	touch $@

bench-vs-flower: $(STAMP) $(FLOWER_VENV)/.installed
	$(BIN)/python benchmarks/bench_vs_flower.py --flower-python $(FLOWER_VENV)/bin/python

bench-agg: $(STAMP)
	$(BIN)/python benchmarks/bench_aggregation.py

bench-gas: $(STAMP)
	$(BIN)/python benchmarks/bench_gas.py

bench-paillier: $(STAMP)
	$(BIN)/python benchmarks/bench_paillier.py

bench-devnet: $(STAMP)
	$(BIN)/python benchmarks/bench_devnet.py

bench-secure: $(STAMP)
	$(BIN)/python benchmarks/bench_secure_devnet.py

# CPU per blob fetch between two nodes: blob sessions against a stream per fetch (~1 min).
bench-blobs: $(STAMP)
	$(BIN)/python benchmarks/bench_blobs.py

# Rewards and reputations on a devnet: honest, free-rider, griefer, blocking and Byzantine
# members over 16 rounds; a table and docs/incentives.png (a few minutes).
bench-cli: $(STAMP)
	$(BIN)/python benchmarks/bench_cli.py

bench-dp: $(STAMP)
	$(BIN)/python benchmarks/bench_dp.py

bench-incentives: $(STAMP)
	$(BIN)/python benchmarks/bench_incentives.py

# Property-based fuzzing of every parser of outside input, 10,000 inputs per surface.
fuzz: $(STAMP)
	$(BIN)/python benchmarks/bench_fuzz.py

clean:
	rm -rf $(VENV) .tools .flchain-devnet build dist *.egg-info .pytest_cache .ruff_cache
