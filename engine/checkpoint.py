"""Checkpoints: atomic save, safe load, full resume (-r) and weights-only fine-tuning (-t).

A checkpoint is a plain dict of tensors and Python values (loadable with weights_only=True):
`model`, `ema` ({module, updates, decay}), `optimizer`, `scaler`, `epoch` (the last finished
epoch), `global_step`, `rng`, `solver` (best scores, stage-2 state), and `meta` (class names,
category ids, the graph spec, nc/imgsz/scale and the merged config) so predict/test can rebuild
the model without the dataset. `model` and `ema.module` keep the official key layout.

A file that holds other Python objects is refused (unpickling them could run code). One from a
source you trust is rewritten once as plain tensors: `python -m engine.checkpoint SRC OUT --trust`.
`python -m engine.checkpoint SRC OUT --ema-only` writes the inference weights (as the official
`convert_weight.py`): `{'model': EMA weights, 'meta': ...}`, no optimizer or training state.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core.checkpoint_io import model_weights, read_checkpoint, save_atomic
from core.errors import CheckpointError, ConfigError, cli_main
from models.convert import convert_if_official
from models.factory import fits


def load_matching(model: nn.Module, sd: dict) -> dict:
    """Load the tensors whose names and shapes match; return what was skipped.

    {'loaded': n, 'mismatched': [(name, ckpt shape, model shape)], 'missing': [...], 'unexpected': [...]}"""
    own = model.state_dict()
    matched, mismatched = {}, []
    for name, value in sd.items():
        if name in own:
            if fits(own[name], value):
                matched[name] = value
            else:  # another shape (another class count), or integers where the model has floats
                mismatched.append((name, tuple(value.shape), tuple(own[name].shape)))
    model.load_state_dict(matched, strict=False)
    return {"loaded": len(matched), "mismatched": mismatched,
            "missing": sorted(set(own) - set(sd)), "unexpected": sorted(set(sd) - set(own))}


def load_for_finetune(model: nn.Module, path: str | Path) -> dict:
    """`-t`: weights only (EMA preferred), official layouts converted, mismatched shapes skipped."""
    sd, source = model_weights(read_checkpoint(path))
    sd, conversion = convert_if_official(sd, model)
    report = load_matching(model, sd)
    report.update(source=source, conversion=conversion)
    if report["loaded"] == 0:
        raise CheckpointError(f"no tensor of {path} fits this model ({len(sd)} tensors, none with a matching "
                              "name and shape)", hint="is it a checkpoint of a different graph?")
    return report


def format_finetune_report(report: dict) -> str:
    lines = [f"loaded {report['loaded']} tensors from the checkpoint's {report['source']} weights"]
    if report.get("conversion"):
        lines.append(f"  converted from the official layout: {report['conversion']}")
    if report["mismatched"]:
        lines.append(f"  skipped {len(report['mismatched'])} tensors with a different shape (kept freshly initialised):")
        lines += [f"    {name}: checkpoint {list(a)} vs model {list(b)}" for name, a, b in report["mismatched"]]
    if report["missing"]:
        lines.append(f"  {len(report['missing'])} model tensors not in the checkpoint, e.g. {report['missing'][:3]}")
    if report["unexpected"]:
        lines.append(f"  {len(report['unexpected'])} checkpoint tensors not in the model, e.g. {report['unexpected'][:3]}")
    return "\n".join(lines)


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    """`value` with only what weights_only loading accepts (modules become their state dicts); None to drop."""
    if isinstance(value, nn.Module):
        return value.state_dict()
    if isinstance(value, (torch.Tensor, int, float, str, bool, type(None))):
        return value
    if isinstance(value, dict):
        kept = {k: _plain(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v is not None or value[k] is None}
    if isinstance(value, (list, tuple)):
        kept = [_plain(v) for v in value]
        return kept if all(v is not None or o is None for v, o in zip(kept, value)) else None
    return None


def resave_trusted(source: str | Path, target: str | Path) -> dict:
    """Rewrite a checkpoint that holds Python objects as plain tensors (what `load` accepts).

    Unpickles with weights_only=False, which runs whatever code the file carries: only for files
    from a source you trust. Objects other than tensors, numbers, strings and containers are dropped."""
    state = torch.load(source, map_location="cpu", weights_only=False)  # the user vouched for this file
    plain = _plain(state)
    if not isinstance(plain, dict):
        plain = {"model": plain}
    save_atomic(plain, target)
    return plain


def inference_weights(state: dict) -> tuple[dict, str]:
    """What inference needs of a checkpoint: {'model': the EMA weights (the model's where the run kept
    no EMA)} plus `meta` (class names, graph, sizes) when the checkpoint has it; and which weights
    those were. It loads wherever a checkpoint does (-r --test-only, -t, predict.py, export.py,
    official code reading `model`), and cannot resume training."""
    weights, source = model_weights(state)
    out = {"model": weights}
    if isinstance(state.get("meta"), dict):
        out["meta"] = state["meta"]
    return out, source


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m engine.checkpoint",
                                     description="Rewrite a checkpoint: --trust (plain tensors of a file that holds "
                                                 "Python objects) and/or --ema-only (the inference weights).")
    parser.add_argument("source", help="a checkpoint (ours or an official release)")
    parser.add_argument("target", help="where to write the new file")
    parser.add_argument("--trust", action="store_true",
                        help="unpickle Python objects in SOURCE (refused by train.py -r/-t): only for a source you trust")
    parser.add_argument("--ema-only", action="store_true",
                        help="keep only the EMA weights (else the model's) and meta: no optimizer, no training state")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    if not (args.trust or args.ema_only):
        raise CheckpointError("say what to write: --ema-only (inference weights) and/or --trust (plain tensors of a "
                              "file from a source you trust)", hint="unpickling an untrusted file can run arbitrary code")
    if not Path(args.source).is_file():
        raise CheckpointError(f"checkpoint not found: {args.source}")
    if Path(args.target).resolve() == Path(args.source).resolve():   # the rewrite would replace what it reads
        raise CheckpointError(f"the target is the source itself: {args.source}", where="OUT",
                              hint="write the new file under another name; the source stays as it is")
    if args.trust:
        plain = resave_trusted(args.source, args.target)
        print(f"{args.target}: plain tensors of {args.source} (keys {sorted(plain)})")
        if not args.ema_only:
            return
    weights, source = inference_weights(read_checkpoint(args.target if args.trust else args.source))
    save_atomic(weights, args.target)
    before, after = Path(args.source).stat().st_size, Path(args.target).stat().st_size
    print(f"{args.target}: the {source} weights of {args.source} ({len(weights['model'])} tensors), "
          f"{before / 2 ** 20:.1f} MB -> {after / 2 ** 20:.1f} MB")


if __name__ == "__main__":
    cli_main(main)
