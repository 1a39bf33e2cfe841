"""`python -m analyze.info GRAPH [--imgsz H W] [--scale s] [--nc N] [--per-layer] [--json]`

Params in train mode, params after deploy(), and GFLOPs of the deploy model at the graph's eval
size (batch 1, FLOPs = 2 x MACs plus element-wise ops, as the official model zoos count)."""
import argparse
import json

import torch

from analyze.profile import count_flops, count_params, deployed_copy
from models import build_model
from models.detector import format_layer_table
from models.errors import cli_main


def model_info(graph, imgsz=None, scale=None, nc=None, per_layer=False) -> dict:
    model = build_model(graph, nc=nc, scale=scale, imgsz=imgsz, check=False)
    deployed = deployed_copy(model)
    height, width = model.imgsz
    image = torch.zeros(1, 3, height, width)
    try:
        profile = count_flops(deployed, image)
    except Exception:
        with torch.no_grad():
            deployed.run(image, check=True)  # reports the failing row as a GraphError
        raise
    info = {"graph": str(graph), "scale": model.scale, "imgsz": [height, width], "nc": model.nc,
            "params": count_params(model), "params_deploy": profile.params, "gflops": round(profile.gflops, 4), "flops": int(profile.flops)}
    if per_layer:
        info["layers"] = [{"index": row.index, "from": row.from_repr, "repeats": row.repeats,
                           "params": count_params(layer), "gflops": profile.per_module.get(layer, 0.0) / 1e9,
                           "module": row.module, "args": row.args}
                          for row, layer in zip(deployed.rows, deployed.layers)]
    return info


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph")
    parser.add_argument("--imgsz", type=int, nargs="+", help="H W (or one number for a square)")
    parser.add_argument("--scale")
    parser.add_argument("--nc", type=int)
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    imgsz = None if args.imgsz is None else (args.imgsz * 2 if len(args.imgsz) == 1 else args.imgsz)
    info = model_info(args.graph, imgsz, args.scale, args.nc, args.per_layer)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return
    if args.per_layer:
        print(format_layer_table(info["layers"], info["imgsz"]))
    scale = f" (scale {info['scale']})" if info["scale"] else ""
    print(f"{info['graph']}{scale}: {info['params']:,} params, {info['params_deploy']:,} after deploy, "
          f"{info['gflops']:.3f} GFLOPs at {info['imgsz'][0]}x{info['imgsz'][1]}")


if __name__ == "__main__":
    cli_main(main)
