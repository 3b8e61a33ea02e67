# The two commands of the README's quick start, set-up included; both idempotent.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup setup-test demo test test-fast lint docs docs-serve clean

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

# The whole suite (what CI runs), the 15 slowest tests listed at the end, then the linters and the docs site.
test: setup-test
	$(BIN)/python -m pytest -q --durations=15
	$(MAKE) --no-print-directory lint
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
	@# a plain `pip install .` (no extras) in a fresh venv runs --help and featurizes the mini tree
	@bash tools/plain_install_check.sh

# The inner loop: everything but the slow and multi-process tests (under 2 minutes on 2 cores).
test-fast: setup-test
	$(BIN)/python -m pytest -q -m "not slow and not dist"

lint: setup
	$(BIN)/ruff check speechcls tests benchmarks tools docs
	$(BIN)/ruff format --check speechcls tests benchmarks tools docs

# The docs site into site/ (git-ignored); --strict: a broken link or anchor, or a page not in the nav, fails
# it. setup installs the test extra, which holds the docs extra's packages.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The same site at http://127.0.0.1:8000, rebuilt on every change.
docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:
	rm -rf data/synth_commands cache/*/ runs/
