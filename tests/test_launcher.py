"""The `detrzoo` command: after a fresh editable install it runs the checkout's commands from any folder,
and the install puts no generic top-level name (`models`, `data`, ...) on other projects' import path."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detrzoo import cli
from tests.engine_helpers import REPO


def test_every_command_names_a_runnable_script_or_module():
    for name, (target, _) in cli.COMMANDS.items():
        if target.endswith(".py"):
            path = REPO / target
        else:
            spec = importlib.util.find_spec(target)
            path = Path(spec.origin if spec.submodule_search_locations is None else
                        Path(spec.origin).with_name("__main__.py"))
        assert path.is_file(), name
        assert 'if __name__ == "__main__":' in path.read_text(), f"{name}: {path} runs nothing as a script"


def test_unknown_command_lists_the_commands(capsys):
    with pytest.raises(SystemExit, match="unknown command 'trian'") as stop:
        cli.main(["trian", "-c", "x.yml"])
    assert "train" in str(stop.value) and "featuremap" in str(stop.value)


def test_checkout_paths_fill_in_only_what_the_current_folder_lacks(tmp_path):
    assert cli.checkout_path("graphs/examples/tiny.yaml", tmp_path) == str(REPO / "graphs/examples/tiny.yaml")
    (tmp_path / "graphs/examples").mkdir(parents=True)
    (tmp_path / "graphs/examples/tiny.yaml").write_text("nc: 1\n")      # the user's own file wins
    assert cli.checkout_path("graphs/examples/tiny.yaml", tmp_path) == "graphs/examples/tiny.yaml"
    assert cli.checkout_path("outputs/run", tmp_path) == "outputs/run"


@pytest.mark.heavy
def test_fresh_install_runs_from_another_folder_and_leaves_generic_names_to_the_project(tmp_path):
    venv = tmp_path / "venv"
    # the test environment's packages (torch, ...) are reused; only detrzoo is installed, from this checkout
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(REPO)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    project = tmp_path / "project"   # a user's project with generic package names of its own
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("OWNER = 'project'\n")
    (project / "data.py").write_text("OWNER = 'project'\n")

    def run(*args):
        out = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
        return out.stdout

    assert "featuremap" in run(str(venv / "bin" / "detrzoo"), "help")
    printed = run(str(venv / "bin" / "detrzoo"), "info", "graphs/examples/tiny.yaml")   # the checkout's graph
    assert "6,296 params" in printed
    assert run(str(python), "-m", "detrzoo", "blocks", "list", "--category", "norm").strip()
    imported = run(str(python), "-c", "import models, data; print(models.__file__, data.__file__)").split()
    assert imported == [str(project / "models" / "__init__.py"), str(project / "data.py")]
    # the install claims `detrzoo` alone: the editable finder pip wrote maps no other top-level name
    claimed = run(str(python), "-c", "import importlib.metadata as m, runpy\n"
                  "finder = next(f for f in m.distribution('detrzoo').files if f.name.endswith('_finder.py'))\n"
                  "print(sorted(runpy.run_path(str(finder.locate()))['MAPPING']))")
    assert claimed.strip() == "['detrzoo']"
