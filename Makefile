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

# The main job end to end on offline demo data: synthesize a Speech Commands-style tree, featurize it
# (mel) into the Zarr cache, train the chapter's CNN a few epochs on CPU, evaluate, predict one clip,
# draw the figures and the HTML report.
# Every step is a no-op when its output is already there.
DEMO_TREE := data/synth_commands
DEMO_RUN := runs/demo
demo: setup
	$(BIN)/speechcls synth --voices 40 --noise 0.05
	$(BIN)/speechcls data info --root $(DEMO_TREE)
	$(BIN)/speechcls featurize --variant mel --root $(DEMO_TREE)
	$(BIN)/speechcls info cache/synth_commands/mel-*.zarr
	@if [ -f $(DEMO_RUN)/metrics.json ]; then echo "$(DEMO_RUN): already trained"; \
	elif [ -f $(DEMO_RUN)/last.pt ]; then $(BIN)/speechcls train --resume $(DEMO_RUN); else \
		$(BIN)/speechcls train --variant mel --epochs 16 --min-epochs 16 --out $(DEMO_RUN); fi
	$(BIN)/speechcls evaluate $(DEMO_RUN)
	$(BIN)/speechcls predict $(DEMO_RUN) $(DEMO_TREE)/$$(head -n 1 $(DEMO_TREE)/testing_list.txt)
	$(BIN)/speechcls export $(DEMO_RUN)
	$(BIN)/speechcls listen $(DEMO_RUN)/best.onnx $(DEMO_TREE)/_background_noise_/white_noise.wav
	$(BIN)/speechcls plot spectrogram $(DEMO_TREE)/$$(head -n 1 $(DEMO_TREE)/testing_list.txt) --out $(DEMO_RUN)/spectrogram.png
	$(BIN)/speechcls plot curves $(DEMO_RUN) --out $(DEMO_RUN)/curves.png
	$(BIN)/speechcls plot confusion $(DEMO_RUN) --out $(DEMO_RUN)/confusion.png
	$(BIN)/speechcls report $(DEMO_RUN) --out $(DEMO_RUN)/report.html
	@# the training summary again (the last one in train.log) and the page to open
	@grep -h -A1 '^summary: ' $(DEMO_RUN)/train.log 2>/dev/null | tail -n 2 || true
	@echo "open $(DEMO_RUN)/report.html"

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
