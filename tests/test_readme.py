"""CI runs the README's first two commands (set-up, tests) and its heavy-test command."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_setup_and_test_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", readme, flags=re.S)
    setup, tests = blocks[0].strip(), blocks[1].strip()
    heavy = [block.strip() for block in blocks if '-m "heavy' in block]
    assert len(heavy) == 1, heavy
    ci_commands = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                   if line and not line.startswith(("#", "set ", "cd "))]
    assert ci_commands == [setup, tests, heavy[0], "lint-imports"]   # the layer contract, also run by tests/test_layers.py
