"""The `speechcls` command line: one module per command group, each command parses, builds a config,
calls one library function and prints (app.py holds the typer app and what the commands share)."""

# isort: skip_file  (the modules register their commands on import, in the order `--help` lists them)
from speechcls.cli import bench, data, deploy, features, plot, stream, train  # noqa: F401
from speechcls.cli.app import app

__all__ = ["app"]
