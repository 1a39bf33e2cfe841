"""detrzoo: a modular research zoo for real-time DETR detectors (install with `pip install -e .[test]`).

The install claims one top-level name, `detrzoo` (the launcher behind the `detrzoo` command); the
checkout's own folders (`models`, `data`, `engine`, ...) stay off the import path of other projects,
where such generic names would shadow the user's. The launcher puts the checkout on `sys.path` when
it runs a command, so the install must be editable (`-e`)."""
from pathlib import Path

from setuptools import setup

requirements = [line.split("#")[0].strip() for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()]

setup(
    name="detrzoo",
    version="0.1.0",
    description="Graph-YAML zoo of real-time DETR detectors (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4)",
    python_requires=">=3.10",
    packages=["detrzoo"],
    entry_points={"console_scripts": ["detrzoo = detrzoo.cli:main"]},
    install_requires=[r for r in requirements if r],
    extras_require={"test": ["pytest", "pytest-xdist", "hypothesis", "calflops", "tidecv", "onnx", "onnxruntime",
                             "onnxslim", "import-linter"],
                    "export": ["onnx", "onnxruntime", "onnxslim"]},
)
