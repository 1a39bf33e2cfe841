"""onnxruntime backend for a graph exported by export.py (network and post-processor in one file).

`OnnxDetector(path)(images, orig_target_sizes)` returns the (labels, boxes, scores) tuple that the
PyTorch deploy model returns, as torch tensors, so predict.py and bench/latency.py use either backend
the same way. The preprocessing the graph expects (input size, letterbox, normalisation) and the
class names travel in the file's metadata, written at export time (`metadata_for`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from core.errors import CheckpointError, ConfigError

INPUT_NAMES = ("images", "orig_target_sizes")
OUTPUT_NAMES = ("labels", "boxes", "scores")


def metadata_for(preprocessing: dict, names: list[str], nc: int, graph: str) -> dict[str, str]:
    """ONNX metadata_props (strings only) that let a reader rebuild the evaluation preprocessing."""
    return {"imgsz": json.dumps(list(preprocessing["imgsz"])), "letterbox": json.dumps(bool(preprocessing["letterbox"])),
            "normalize": json.dumps(preprocessing["normalize"]), "names": json.dumps(list(names)),
            "nc": str(nc), "graph": graph}


def require_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("onnxruntime is not installed", where="--backend onnx",
                          hint='pip install -e ".[export]"') from None
    return onnxruntime


class OnnxDetector:
    """An exported detector run by onnxruntime on the CPU (or the providers given)."""

    def __init__(self, path: str | Path, threads: int | None = None, providers=("CPUExecutionProvider",),
                 spinning: bool = True):
        onnxruntime = require_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"ONNX file not found: {path}", hint="write one with `python export.py`")
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if not spinning:  # idle workers sleep instead of busy-waiting (fair to other work on a shared CPU)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=list(providers))
        except Exception as err:  # noqa: BLE001 (any unreadable model is reported the same way)
            raise CheckpointError(f"onnxruntime cannot load {path}: {str(err).splitlines()[0]}",
                                  hint="re-export it with `python export.py`") from None
        inputs = [i.name for i in self.session.get_inputs()]
        if tuple(inputs) != INPUT_NAMES:
            raise CheckpointError(f"{path} has inputs {inputs}, expected {list(INPUT_NAMES)}",
                                  hint="export the detector with export.py (network + post-processor)")
        self.path = path
        meta = self.session.get_modelmeta().custom_metadata_map
        image_shape = self.session.get_inputs()[0].shape  # [B, 3, H, W]; B is a name when dynamic
        self.imgsz = json.loads(meta["imgsz"]) if "imgsz" in meta else [int(image_shape[2]), int(image_shape[3])]
        self.dynamic_batch = not isinstance(image_shape[0], int)
        self.preprocessing = {"imgsz": self.imgsz, "letterbox": json.loads(meta.get("letterbox", "false")),
                              "normalize": json.loads(meta.get("normalize", "false"))}
        self.names = json.loads(meta.get("names", "[]"))
        self.nc = int(meta.get("nc", len(self.names)))

    def __call__(self, images: torch.Tensor, orig_target_sizes: torch.Tensor):
        """images [B,3,H,W] float32 preprocessed; orig_target_sizes [B,2] (w, h) -> (labels, boxes, scores)."""
        feed = {"images": np.ascontiguousarray(images.detach().cpu().numpy(), dtype=np.float32),
                "orig_target_sizes": np.ascontiguousarray(orig_target_sizes.detach().cpu().numpy(), dtype=np.int64)}
        return tuple(torch.from_numpy(out) for out in self.session.run(list(OUTPUT_NAMES), feed))
