from speechcls.cli import app

app(prog_name="speechcls")
