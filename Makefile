# The two commands of the README's quick start, set-up included; both idempotent.
VENV ?= .venv
BIN := $(VENV)/bin
export VENV

.PHONY: setup demo test clean

setup:
	@bash tools/setup.sh

# The main job end to end on offline demo data: synthesize a Speech Commands-style tree, describe it,
# featurize it (mel) into the Zarr cache and describe the store.
demo: setup
	$(BIN)/speechcls synth --voices 40 --noise 0.05
	$(BIN)/speechcls data info --root data/synth_commands
	$(BIN)/speechcls featurize --variant mel --root data/synth_commands
	$(BIN)/speechcls info cache/synth_commands/mel-*.zarr

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf data/synth_commands cache/*/ runs/
