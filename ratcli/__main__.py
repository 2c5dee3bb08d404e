from ratcli.cli import app

app(prog_name="rat")
