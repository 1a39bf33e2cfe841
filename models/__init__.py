"""Models: graph parsing, the Detector that runs a graph, and (in later modules) criteria,
post-processing and official-checkpoint conversion."""
from __future__ import annotations

from pathlib import Path


def build_model(graph: str | Path | dict, nc: int | None = None, scale: str | None = None,
                imgsz=None, check: bool = True):
    """Build a Detector from a graph YAML (or its loaded dict).

    nc      class count; overrides the graph's `nc` (the dataset's count usually goes here)
    scale   a key of the graph's `scales:`; default: the file-name suffix (deim-n.yaml -> n)
    imgsz   eval input size (int or [h, w]); default: the graph's `imgsz`, else 640
    check   run one small forward that reports a failing row by its index
    """
    from models.detector import Detector
    from models.graph import parse

    model = Detector(parse(graph, nc=nc, scale=scale, imgsz=imgsz))
    if check:
        model.check()
    return model
