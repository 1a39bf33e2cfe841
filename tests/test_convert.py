"""models.convert: official D-FINE/DEIM key layout -> graph rows, on a small checkpoint the test writes.

The official layout is written here by hand from the official module names (backbone.stem,
backbone.stages.<k>, encoder.input_proj/encoder/lateral_convs/fpn_blocks/downsample_convs/pan_blocks,
decoder.*). Equality with the real official models was checked outside the repo (eval outputs
of D-FINE-N/S and DEIM-N identical after conversion)."""
import subprocess
import sys

import pytest
import torch
import yaml

from models import build_model
from models.convert import convert_official, is_official_layout
from core.errors import CheckpointError

BACKBONE = [[-1, 1, "HGStem", [8, 8, True]],
            [-1, 1, "HGStage", [8, 16, 1, 2, False, False, 3, True]],
            [-1, 1, "HGStage", [8, 32, 1, 2, True, False, 3, True]],
            [-1, 1, "HGStage", [16, 48, 1, 2, True, True, 5, True]]]
DECODER = {"feat_strides": [8, 16], "hidden_dim": 32, "num_levels": 2, "num_layers": 2, "num_points": [2, 2],
           "nhead": 4, "dim_feedforward": 64, "num_queries": 10, "num_denoising": 4, "reg_max": 8}
ENCODER = {"feat_strides": [8, 16], "hidden_dim": 32, "use_encoder_idx": [1], "nhead": 4, "dim_feedforward": 64,
           "expansion": 0.5, "depth_mult": 0.34}
WHOLE = {"nc": 3, "imgsz": [64, 64], "backbone": BACKBONE,
         "encoder": [[[2, 3], 1, "HybridEncoder", ENCODER]],
         "decoder": [[-1, 1, "DFINEDecoder", DECODER]]}
ROWS = {"nc": 3, "imgsz": [64, 64], "backbone": BACKBONE, "encoder": [
    [2, 1, "Conv", [[32, 1, 1], {"act": None}]],              # 4  input_proj.0
    [3, 1, "Conv", [[32, 1, 1], {"act": None}]],              # 5  input_proj.1
    [-1, 1, "AIFI", {"nhead": 4, "dim_feedforward": 64, "stride": 16}],   # 6 encoder.0
    [-1, 1, "Conv", [[32, 1, 1], {"act": None}]],             # 7  lateral_convs.0
    [-1, 1, "nn.Upsample", [None, 2, "nearest"]],             # 8
    [[-1, 4], 1, "Concat", []],                               # 9
    [-1, 1, "RepNCSPELAN4", [32, 64, 8, 1]],                  # 10 fpn_blocks.0 -> out P3
    [-1, 1, "SCDown", [32, 3, 2]],                            # 11 downsample_convs.0
    [[-1, 7], 1, "Concat", []],                               # 12
    [-1, 1, "RepNCSPELAN4", [32, 64, 8, 1]]],                 # 13 pan_blocks.0 -> out P4
    "decoder": [[[10, 13], 1, "DFINEDecoder", DECODER]]}


def official_layout(model) -> dict:
    """Our whole-block tiny model's weights under the official key names."""
    names = {0: "backbone.stem.", 1: "backbone.stages.0.", 2: "backbone.stages.1.", 3: "backbone.stages.2.",
             4: "encoder.", 5: "decoder."}
    sd = {}
    for key, value in model.state_dict().items():
        _, row, rest = key.split(".", 2)
        sd[names[int(row)] + rest] = value.clone()
    sd["decoder.anchors"] = torch.zeros(1, 20, 4)     # official buffers that we recompute
    sd["decoder.valid_mask"] = torch.ones(1, 20, 1, dtype=torch.bool)
    return sd


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = build_model(WHOLE, check=False).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model, official_layout(model)


def test_layout_detection():
    assert is_official_layout({"backbone.stem.stem1.conv.weight": torch.zeros(1), "decoder.x": torch.zeros(1)})
    assert is_official_layout({"module.encoder.input_proj.0.conv.weight": torch.zeros(1)})
    assert not is_official_layout({"layers.0.conv.weight": torch.zeros(1)})
    assert not is_official_layout({})


def test_conversion_restores_every_tensor(source):
    model, official = source
    fresh = build_model(WHOLE, check=False)
    converted, report = convert_official(official, fresh, strict=True)
    assert report.dropped == ["decoder.anchors", "decoder.valid_mask"]
    assert not report.unmapped and not report.mismatched and not report.missing
    expected = model.state_dict()
    assert converted.keys() == expected.keys()
    assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_spelled_out_encoder_takes_the_same_checkpoint_and_gives_the_same_outputs(source):
    model, official = source
    rows = build_model(ROWS, check=False).eval()
    converted, _ = convert_official(official, rows, strict=True)
    rows.load_state_dict(converted)
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(images), rows(images)
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"], atol=1e-5, rtol=0)


def test_shape_mismatch_and_unmapped_keys_are_named(source):
    _, official = source
    fresh = build_model(WHOLE, check=False)
    wrong = dict(official)
    wrong["encoder.input_proj.1.conv.weight"] = torch.zeros(32, 47, 1, 1)
    with pytest.raises(CheckpointError, match=r"encoder\.input_proj\.1\.conv\.weight"):
        convert_official(wrong, fresh, strict=True)
    converted, report = convert_official(wrong, fresh)        # the trainer's -t: keep what fits
    assert [m[0] for m in report.mismatched] == ["encoder.input_proj.1.conv.weight"]
    assert "layers.4.input_proj.1.conv.weight" not in converted
    extra = dict(official, **{"encoder.extra_head.weight": torch.zeros(3)})
    with pytest.raises(CheckpointError, match=r"encoder\.extra_head\.weight"):
        convert_official(extra, fresh, strict=True)


def test_cli_writes_a_loadable_checkpoint(source, tmp_path):
    model, official = source
    src, graph, out = tmp_path / "official.pth", tmp_path / "tiny-dfine.yaml", tmp_path / "converted.pth"
    torch.save({"ema": {"module": official, "updates": 1}, "model": {}}, src)   # EMA weights win, as officially
    graph.write_text(yaml.safe_dump(WHOLE))
    subprocess.run([sys.executable, "-m", "models.convert", str(src), "-c", str(graph), "-o", str(out)],
                   check=True, capture_output=True, text=True)
    converted = torch.load(out, weights_only=True)["model"]
    assert all(torch.equal(converted[k], v) for k, v in model.state_dict().items())
    bad = subprocess.run([sys.executable, "-m", "models.convert", str(tmp_path / "nope.pth"), "-c", str(graph),
                          "-o", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2 and "not found" in bad.stderr
