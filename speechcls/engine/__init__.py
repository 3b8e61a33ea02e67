"""Training and its neighbours: fit (fit.py), one step and one evaluation pass (steps.py), evaluate,
lr_find, and the only code that knows a checkpoint (checkpoint.py) or a run folder (run_dir.py)."""
