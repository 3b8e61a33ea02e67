"""What a person reads: console tables (console.py), the chapter's figures (plots.py), the HTML report (html.py)."""
