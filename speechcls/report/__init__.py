"""What a person reads: console tables (console.py), the chapter's figures (plots.py), stream evaluation's DET curve
(det.py), the HTML report (html.py)."""
