"""Where `speechcls stream eval` keeps what it measured, and reading it back: <run>/streaming.csv (the
threshold sweep) and streaming.json (the operating point and the settings it was measured with), or
<stem>.streaming.* beside any other checkpoint or an .onnx file. listen, export, plot det and the report
read them here, without the evaluation code.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

MARK = "speechcls stream eval"  # in streaming.json: how a rerun knows its own files


def result_paths(model: str | Path) -> dict[str, Path]:
    """Where the results of `model` go: <run>/streaming.csv and streaming.json for a run folder or its
    best.pt; <folder>/<stem>.streaming.csv / .json beside any other checkpoint or an .onnx file."""
    model = Path(model)
    if model.is_dir():
        folder, stem = model, ""
    elif model.suffix == ".pt" and model.name == "best.pt":
        folder, stem = model.parent, ""
    else:
        folder, stem = model.parent, model.stem + "."
    return {"csv": folder / f"{stem}streaming.csv", "json": folder / f"{stem}streaming.json"}


def read_results(model: str | Path) -> dict | None:
    """The streaming.json of `model` (result_paths), or None where it has none; ValueError naming the file
    where it is not one stream eval wrote."""
    path = result_paths(model)["json"]
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not readable as stream eval's JSON ({e}); run stream eval again") from None
    if not isinstance(record, dict) or record.get("mark") != MARK:
        raise ValueError(f"{path}: not a file stream eval wrote; remove it or run stream eval again")
    return record


def read_operating_point(model: str | Path) -> dict | None:
    """The operating point measured for `model` (a run folder, a checkpoint, an .onnx file), or None."""
    record = read_results(model)
    return None if record is None else record.get("operating_point")


def read_curve(model: str | Path) -> list[dict]:
    """streaming.csv of `model` as rows (numbers as floats, empty cells as NaN)."""
    path = result_paths(model)["csv"]
    if not path.is_file():
        raise ValueError(f"{path}: no such file; run `speechcls stream eval {model} STREAM.wav --labels STREAM.csv`")
    rows = []
    for row in csv.DictReader(io.StringIO(path.read_text())):
        rows.append({k: (v if k == "word" else float(v) if v != "" else math.nan) for k, v in row.items()})
    return rows


def operating_point_for(model: str | Path, scorer=None) -> tuple[dict | None, str]:
    """(operating point, where it was read) for listen: for an .onnx file the results beside it (measured on
    that file), else its metadata's (measured on the run it was exported from); for a run or a checkpoint
    its streaming.json."""
    path = result_paths(model)["json"]
    point = read_operating_point(model)
    if point is not None:
        return point, str(path)
    if scorer is not None and getattr(scorer, "meta", None) is not None:
        raw = scorer.meta.get("operating_point")
        if raw:
            try:
                point = json.loads(raw)
            except ValueError:
                raise ValueError(f"{model}: its metadata's operating_point is not JSON; export it again") from None
            if point is not None:
                if not isinstance(point, dict) or not 0 <= point.get("threshold", -1) < 1:
                    raise ValueError(f"{model}: its metadata's operating_point {raw!r} is no threshold in [0, 1)")
                return point, f"{model}'s metadata (measured on {point.get('model', 'the run')})"
    return None, ""
