# The two commands of the README's quick start, set-up included; both idempotent.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup setup-test demo test test-fast lint clean

# espeak-ng and .venv: what the demo needs
setup:
	@bash tools/setup.sh

# the same, and chromium: a test renders the HTML report in headless chromium
setup-test:
	@SPEECHCLS_WITH_CHROMIUM=1 bash tools/setup.sh

# The main job end to end on offline demo data: tools/demo.sh (synthesize a Speech Commands-style tree,
# featurize it, train the recipes, evaluate, export, listen, figures, report). Every step is a no-op when
# its output is already there.
demo: setup
	@bash tools/demo.sh

# The whole suite (what CI runs), the 15 slowest tests listed at the end, then the linters.
test: setup-test
	$(BIN)/python -m pytest -q --durations=15
	$(MAKE) --no-print-directory lint
	@# a plain `pip install .` (no extras) in a fresh venv runs --help and featurizes the mini tree
	@bash tools/plain_install_check.sh

# The inner loop: everything but the slow and multi-process tests (under 2 minutes on 2 cores).
test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow and not dist"

lint: setup
	$(BIN)/ruff check speechcls tests benchmarks tools
	$(BIN)/ruff format --check speechcls tests benchmarks tools

clean:
	rm -rf data/synth_commands cache/*/ runs/
