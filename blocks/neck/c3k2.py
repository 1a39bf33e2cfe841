"""C3k2: C2f whose inner blocks are bottlenecks or C3k stacks. Ultralytics YOLO11, 2024. https://github.com/ultralytics/ultralytics

With c3k=True each inner block is a C3k (two-branch CSP over two 3x3 bottlenecks). `block` (a
nested `{module: Name, args: {...}}`) replaces the bottleneck, inside the C3k stacks too."""
from blocks.common import build_inner
from blocks.neck._csp import Bottleneck, C3k
from blocks.neck.c2f import C2f
from blocks.registry import register


@register("neck", channels="arg0", repeat_arg="n", example={"args": [32, 2, True], "shape": (2, 16, 16, 16)})
class C3k2(C2f):
    def __init__(self, c1: int, c2: int, n: int = 1, c3k: bool = False, e: float = 0.5, g: int = 1,
                 shortcut: bool = True, block=None):
        self.c3k = c3k
        super().__init__(c1, c2, n, shortcut, g, e, block)

    def _inner(self, block, shortcut, g):
        if self.c3k:
            return C3k(self.c, self.c, 2, shortcut, g, block=block)
        if block is not None:
            return build_inner(block, self.c)
        return Bottleneck(self.c, self.c, shortcut, g)
