"""`python -m analyze.info GRAPH | -c RUN_CONFIG [-u k=v ...] [--imgsz H W] [--scale s] [--nc N]
[--per-layer] [--json]`

Params in train mode, params after deploy() (every conv+BN folded) and after the official deploy
(which keeps HGNetv2's, ResNet's and the decoder projections' BNs: the official zoos' `params_deploy`),
and GMACs and GFLOPs at the eval size, batch 1, on the official deploy form (`gflops_deploy`: on ours).
MACs are the multiply-accumulates of convolutions, linears, matmuls, einsum and attention projections;
FLOPs count 2 per MAC plus bias adds and element-wise ops (activations, norms, pools, interpolation),
as the official model zoos count them (calflops). A run config (`-c`, as the official get_info takes)
gives the graph, scale, eval size and class count (`nc`, else `classes`) that training would use; its
dataset's own class count, which training reads, is not opened here."""
import argparse
import json

import torch

from core.errors import ArgumentError, cli_main
from engine.config import load_config, resolve
from metrics.flops import count_flops, count_params, deployed_copy
from models import build_model


def layer_table(model, profile=None) -> list[dict]:
    """One dict per row of `model`: index, from, repeats, params, GFLOPs (from `profile`, else
    counted at the model's eval size, batch 1), module, args."""
    if profile is None:
        device = next(model.parameters()).device
        with torch.no_grad():
            profile = count_flops(model, torch.zeros(1, 3, *model.imgsz, device=device))
    return [{"index": row.index, "from": row.from_repr, "repeats": row.repeats,
             "params": count_params(layer), "gmacs": profile.per_module_macs.get(layer, 0.0) / 1e9,
             "gflops": profile.per_module.get(layer, 0.0) / 1e9, "module": row.module, "args": row.args}
            for row, layer in zip(model.rows, model.layers)]


def print_layer_table(model) -> None:
    """The graph's rows with their params and GFLOPs at the eval size (train.py prints it at the start)."""
    print(format_layer_table(layer_table(model), model.imgsz))


def _short(value, limit=60):
    text = getattr(value, "block_name", None) or repr(value)
    if hasattr(value, "func") and hasattr(value, "keywords"):
        text = f"{value.block_name}({', '.join(f'{k}={v}' for k, v in value.keywords.items())})"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_layer_table(table: list[dict], imgsz) -> str:
    lines = [f"{'':>4}{'from':>14}{'n':>4}{'params':>12}{'GMACs':>10}{'GFLOPs':>10}  {'module':<24}arguments"]
    for r in table:
        args = ", ".join(_short(a) for a in r["args"])
        lines.append(f"{r['index']:>4}{str(r['from']):>14}{r['repeats']:>4}{r['params']:>12,}"
                     f"{r['gmacs']:>10.3f}{r['gflops']:>10.3f}  {r['module']:<24}[{args}]")
    total_params = sum(r["params"] for r in table)
    total_macs = sum(r["gmacs"] for r in table)
    total_flops = sum(r["gflops"] for r in table)
    lines.append(f"{'total':>22}{total_params:>12,}{total_macs:>10.3f}{total_flops:>10.3f}  at {imgsz[0]}x{imgsz[1]}, "
                 "batch 1")
    return "\n".join(lines)


def model_info(graph, imgsz=None, scale=None, nc=None, per_layer=False) -> dict:
    model = build_model(graph, nc=nc, scale=scale, imgsz=imgsz, check=False)
    official = deployed_copy(model, official=True)
    height, width = model.imgsz
    image = torch.zeros(1, 3, height, width)
    try:
        profile = count_flops(official, image)
    except Exception:
        with torch.no_grad():
            official.run(image, check=True)  # reports the failing row as a GraphError
        raise
    deployed = deployed_copy(model)
    ours = count_flops(deployed, image)
    info = {"graph": str(model.graph_path or graph), "scale": model.scale, "imgsz": [height, width], "nc": model.nc,
            "params": count_params(model), "params_deploy": ours.params, "params_deploy_official": profile.params,
            "gmacs": round(profile.gmacs, 4), "macs": int(profile.macs), "gflops": round(profile.gflops, 4),
            "flops": int(profile.flops), "gflops_deploy": round(ours.gflops, 4)}
    if per_layer:
        info["layers"] = layer_table(official, profile)
    return info


def config_model(path, updates=()) -> dict:
    """The graph, scale, eval size and class count a run config trains (as `model_info`'s keywords)."""
    cfg = resolve(load_config(path, updates), config_path=path, training=False)
    nc = cfg["nc"] or (len(cfg["classes"]) if cfg["classes"] else None)
    return {"graph": cfg["graph"], "scale": cfg["scale"], "imgsz": cfg["imgsz"], "nc": nc}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analyze.info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graph", nargs="?", help="a graph YAML (or give a run config with -c)")
    parser.add_argument("-c", "--config", help="a run config: its graph, scale, imgsz and nc")
    parser.add_argument("-u", "--update", nargs="+", default=[], help="overrides of the run config, a.b=value")
    parser.add_argument("--imgsz", type=int, nargs="+", help="H W (or one number for a square)")
    parser.add_argument("--scale")
    parser.add_argument("--nc", type=int)
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if (args.graph is None) == (args.config is None):
        raise ArgumentError("give a graph YAML or a run config (-c), one of the two", where="analyze.info",
                            hint="python -m analyze.info graphs/deim/deim-n.yaml, or -c configs/demo.yml")
    imgsz = None if args.imgsz is None else (args.imgsz * 2 if len(args.imgsz) == 1 else args.imgsz)
    model = config_model(args.config, args.update) if args.config else {"graph": args.graph}
    for key, value in (("imgsz", imgsz), ("scale", args.scale), ("nc", args.nc)):  # flags win over the config
        model[key] = value if value is not None else model.get(key)
    info = model_info(per_layer=args.per_layer, **model)
    if args.config:
        info["config"] = args.config
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return
    if args.per_layer:
        print(format_layer_table(info["layers"], info["imgsz"]))
    scale = f" (scale {info['scale']})" if info["scale"] else ""
    graph = info["graph"] if isinstance(model["graph"], str) else "inline"
    source = f"{args.config} (graph {graph}, nc {info['nc']})" if args.config else graph
    print(f"{source}{scale}: {info['params']:,} params, {info['params_deploy']:,} after deploy "
          f"({info['params_deploy_official']:,} after the official deploy), {info['gmacs']:.3f} GMACs, "
          f"{info['gflops']:.3f} GFLOPs at {info['imgsz'][0]}x{info['imgsz'][1]} "
          f"({info['gflops_deploy']:.3f} with every BN folded)")


if __name__ == "__main__":
    cli_main(main)
