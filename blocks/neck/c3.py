"""C3: CSP bottleneck with three convs. Ultralytics YOLOv5, 2020. https://github.com/ultralytics/yolov5

Two 1x1 branches of c2 * e channels, one through n bottlenecks (1x1 then 3x3, residual), concatenated
and fused by a 1x1 conv to c2. `block` (a nested `{module: Name, args: {...}}`) replaces the
bottleneck with any channel-keeping block, as in C2f and C3k2.
Not compared: same layers as Ultralytics' C3 (yolov5 models/common.py); its parameter count is pinned
in tests/test_zoo2_mixers.py."""
from blocks.neck._csp import C3k
from blocks.registry import register


@register("neck", channels="arg0", repeat_arg="n", example={"args": [32, 2], "shape": (2, 16, 16, 16)})
class C3(C3k):
    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5, block=None):
        """n: bottlenecks (a row's repeats); shortcut: their residuals; g: groups of their 3x3 conv;
        e: hidden width / c2; block: a nested channel-keeping block replacing the bottleneck."""
        super().__init__(c1, c2, n, shortcut, g, e, k=(1, 3), block=block)
