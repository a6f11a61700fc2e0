# tennis-exp: `make help` lists the targets. Every target that runs code sets up .venv itself.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
HW     ?= cpu,gpu1
PORT   ?= 5000
HOST   ?= 127.0.0.1
STORE  ?=
ARGS   ?=

.DEFAULT_GOAL := help
.PHONY: help install prepare train predict sweep ui server compare bench bench-prepare \
	bench-predict bench-sweep bench-baseline bench-gpu test test-all lint clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the package (editable) with its dev tools

prepare: $(STAMP) ## Videos to frames, split by player (ARGS="videos=THETIS/VIDEO_RGB out=data/thetis_frames")
	$(PY) -m tennis_exp.prepare $(ARGS)

train: $(STAMP) ## Train on the defaults: synthetic data, local MLflow store (ARGS="key=value ...")
	$(PY) -m tennis_exp $(ARGS)

predict: $(STAMP) ## Events over time in videos (ARGS="checkpoint=<best.pth> video=<file or folder> ...")
	$(PY) -m tennis_exp.predict $(ARGS)

sweep: $(STAMP) ## Sweep hardware profiles into multirun_outputs/ (HW=gpu1,gpu2,gpu4 ARGS=...)
	$(PY) -m tennis_exp --multirun hardware=$(HW) $(ARGS)

ui: $(STAMP) ## MLflow UI on the project's store, on 127.0.0.1; prints the runs' address (PORT=5000)
	$(PY) -m tennis_exp.server --ui --port $(PORT) --workers 1

server: $(STAMP) ## MLflow server for a lab: database store, artifacts through it (HOST= PORT= STORE=postgresql+psycopg2://...)
	$(PY) -m tennis_exp.server --host $(HOST) --port $(PORT) $(if $(STORE),--store "$(STORE)") $(ARGS)

compare: $(STAMP) ## The speed table of the newest sweep (ARGS="--sweep-dir DIR" or "--all")
	$(PY) -m tennis_exp.compare $(ARGS)

bench: $(STAMP) ## Benchmarks against a bare PyTorch loop, table into bench/results/ (ARGS=--quick or --gpu)
	$(PY) -m bench.run $(ARGS)

bench-prepare: $(STAMP) ## prepare's frames/s against a bare PyAV decode loop (ARGS=--quick)
	$(PY) -m bench.prepare $(ARGS)

bench-predict: $(STAMP) ## predict's real-time factor against a bare decode loop (ARGS=--quick or --gpu)
	$(PY) -m bench.predict $(ARGS)

bench-baseline: $(STAMP) ## The users' whole baseline on a GPU, caches built included (ARGS=--quick: CPU smoke)
	$(PY) -m bench.baseline $(ARGS)

bench-gpu: $(STAMP) ## Every GPU figure in one 8-minute run, into docs/results.md (ARGS=--quick: CPU smoke, not written there)
	$(PY) -m bench.gpu $(if $(findstring --quick,$(ARGS)),,--results-page docs/results.md) $(ARGS)

bench-sweep: $(STAMP) ## A 4-job CPU sweep one after the other against side by side; server vs SQLite
	$(PY) -m bench.sweep $(ARGS)

# The test files run side by side, one per core (pytest-xdist): most of a test's time is a
# fresh interpreter importing torch, which one core does alone.
test: $(STAMP) ## The fast test suite, tests/unit and tests/e2e without `slow` (what CI runs)
	$(PY) -m pytest -m "not slow" -n auto --dist loadscope --durations=15

test-all: $(STAMP) ## Every test, the slow end-to-end runs too
	$(PY) -m pytest -n auto --dist loadscope --durations=15

lint: $(STAMP) ## ruff
	$(PY) -m ruff check tennis_exp hydra_plugins tests bench

clean: ## Remove outputs, caches and the local MLflow store (keeps .venv)
	rm -rf outputs multirun_outputs/*/ mlflow.db .mlflow.db.lock mlartifacts .cache data .pytest_cache
