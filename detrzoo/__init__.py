"""The `detrzoo` command: one launcher for the checkout's entry points and analysis commands.

This is the only package `pip install -e .` puts on the import path, so a user's own `models/`,
`data/` or `engine/` in another project stays theirs. The launcher puts the checkout it was
installed from on `sys.path` and runs the chosen script with runpy, as `python SCRIPT` would.
In Python outside the checkout, `sys.path.insert(0, str(detrzoo.ROOT))` gives the library
(`from models import build_model`)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]   # the checkout: an editable install links this folder
