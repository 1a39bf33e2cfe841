"""`python -m analyze.featuremap -c CFG -r CKPT -i IMAGE --layers IDX [IDX ...] [-o DIR] [--channels 32]`

For each chosen graph row, saves a grid of its first channels (each normalised on its own) and the
channel-mean image, so a researcher can see what a swapped block passes on. Multi-output rows
(a whole backbone) save one grid per output."""
import argparse
import math
from pathlib import Path

import numpy as np
import torch

from core.drawing import plot_fonts
from core.errors import ConfigError, cli_main


def _normalise(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


@plot_fonts()
def save_feature_figures(feature: torch.Tensor, title: str, out_dir: Path, stem: str, channels: int = 32) -> list[Path]:
    """Save `<stem>_grid.png` (first `channels` maps) and `<stem>_mean.png` for a [C, H, W] feature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    feature = feature.detach().float().cpu().numpy()
    count = min(channels, feature.shape[0])
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.6 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < count:
            axis.imshow(_normalise(feature[index]), cmap="viridis")
            axis.set_title(str(index), fontsize=7)
    fig.suptitle(f"{title}: channels 0-{count - 1} of {feature.shape[0]}, {feature.shape[1]}x{feature.shape[2]}")
    fig.tight_layout()
    grid = out_dir / f"{stem}_grid.png"
    fig.savefig(grid, dpi=100)
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(4, 4 * feature.shape[1] / feature.shape[2]))
    axis.imshow(_normalise(feature.mean(0)), cmap="inferno")
    axis.set_title(f"{title}: channel mean")
    axis.axis("off")
    mean = out_dir / f"{stem}_mean.png"
    fig.savefig(mean, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return [grid, mean]


def feature_maps(model, image_tensor: torch.Tensor, layers: list[int]) -> dict[int, list[torch.Tensor]]:
    """Outputs of the chosen rows for one image (lists for multi-output rows)."""
    last = len(model.rows) - 1
    for index in layers:
        if not 0 <= index <= last:
            raise ConfigError(f"layer {index} does not exist; the graph has rows 0..{last}", where="--layers")
    with torch.no_grad():
        _, taps = model.run(image_tensor[None], taps=layers)
    maps = {}
    for index, value in taps.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not all(isinstance(v, torch.Tensor) and v.dim() == 4 for v in values):
            raise ConfigError(f"row {index} ({model.rows[index].module}) does not output feature maps",
                              where="--layers", hint="choose a backbone or encoder row")
        maps[index] = [v[0] for v in values]
    return maps


def main(argv=None):
    from analyze import _detector_cli

    parser = argparse.ArgumentParser(prog="python -m analyze.featuremap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _detector_cli.add_arguments(parser, "outputs/featuremaps")
    parser.add_argument("--channels", type=int, default=32, help="channels shown in each grid")
    args = parser.parse_args(argv)
    if args.channels < 1:
        parser.error(f"--channels must be at least 1, got {args.channels}")
    model, _, out_dir, inputs = _detector_cli.open_detector(args)
    for path, stem, tensor in inputs:
        for index, features in feature_maps(model, tensor, args.layers).items():
            for part, feature in enumerate(features):
                suffix = f"_out{part}" if len(features) > 1 else ""
                title = f"{path.name} row {index} {model.rows[index].module}{suffix}"
                saved = save_feature_figures(feature, title, out_dir, f"{stem}_row{index}{suffix}", args.channels)
                print("wrote", *saved)


if __name__ == "__main__":
    cli_main(main)
