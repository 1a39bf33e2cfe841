"""detrzoo: a modular research zoo for real-time DETR detectors (install with `pip install -e .[test]`)."""
from pathlib import Path

from setuptools import find_packages, setup

requirements = [line.split("#")[0].strip() for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()]

setup(
    name="detrzoo",
    version="0.1.0",
    description="Graph-YAML zoo of real-time DETR detectors (D-FINE, DEIM, DEIMv2, RT-DETRv2, RT-DETRv4)",
    python_requires=">=3.10",
    packages=find_packages(include=["core*", "blocks*", "models*", "data*", "metrics*", "engine*", "analyze*"]),
    py_modules=["train", "distill", "predict", "export"],
    install_requires=[r for r in requirements if r],
    extras_require={"test": ["pytest", "hypothesis", "calflops", "tidecv", "onnx", "onnxruntime", "onnxslim",
                             "import-linter"],
                    "export": ["onnx", "onnxruntime", "onnxslim"]},
)
