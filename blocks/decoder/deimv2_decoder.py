"""DEIMv2Decoder: Real-Time Object Detection Meets DINOv3 (DEIMv2). arXiv 2025. https://arxiv.org/abs/2509.20787

The D-FINE decoder (FDR, LQE, GO-LSD, denoising) with DEIMv2's changes: RMSNorm and a SwiGLU FFN in
every layer, the gateway optional, box (and score) heads optionally shared across layers, queries
picked straight from the encoder tokens (no enc_output) with one position embedding of the initial
boxes for all layers. Official `DEIMTransformer` state-dict keys; output dict as DFINEDecoder's.
"""
from __future__ import annotations

from blocks.decoder.dfine_decoder import DFINEDecoder
from blocks.registry import register


@register("decoder", channels=lambda c_in, kw: None, example={
    "shapes": [(2, 32, 8, 8), (2, 32, 4, 4)],
    "kwargs": {"num_classes": 2, "hidden_dim": 32, "num_queries": 10, "num_levels": 2, "num_points": [2, 2],
               "feat_strides": [16, 32], "nhead": 4, "num_layers": 2, "dim_feedforward": 64, "num_denoising": 6,
               "reg_max": 8, "use_gateway": False, "share_bbox_head": True}})
class DEIMv2Decoder(DFINEDecoder):
    """DEIMv2Decoder: Real-Time Object Detection Meets DINOv3 (DEIMv2). arXiv 2025. https://arxiv.org/abs/2509.20787

    Arguments are the official DEIMTransformer's; beyond DFINEDecoder's:
    use_gateway      gated fusion of the cross-attention (else residual add + RMSNorm `norm2`)
    share_bbox_head  one box head for every layer up to eval_idx (Atto-Pico); share_score_head likewise
    """

    _layer_norm, _ffn = "rms", "swiglu"
    _deimv2_query_head = True

    def __init__(self, in_channels: list[int], num_classes: int = 80, hidden_dim: int = 256, num_queries: int = 300,
                 feat_strides=(8, 16, 32), num_levels: int = 3, num_points=(3, 6, 3), nhead: int = 8,
                 num_layers: int = 6, dim_feedforward: int = 1024, dropout: float = 0.0, activation: str = "relu",
                 num_denoising: int = 100, label_noise_ratio: float = 0.5, box_noise_scale: float = 1.0,
                 learn_query_content: bool = False, eval_spatial_size=None, eval_idx: int = -1, eps: float = 1e-2,
                 aux_loss: bool = True, cross_attn_method: str = "default", query_select_method: str = "default",
                 reg_max: int = 32, reg_scale: float = 4.0, layer_scale: float = 1, mlp_act: str = "relu",
                 use_gateway: bool = True, share_bbox_head: bool = False, share_score_head: bool = False):
        # read by DFINEDecoder.__init__ while it builds the layers and heads
        self._use_gateway, self._share_bbox_head, self._share_score_head = use_gateway, share_bbox_head, share_score_head
        super().__init__(in_channels, num_classes, hidden_dim, num_queries, feat_strides, num_levels, num_points,
                         nhead, num_layers, dim_feedforward, dropout, activation, num_denoising, label_noise_ratio,
                         box_noise_scale, learn_query_content, eval_spatial_size, eval_idx, eps, aux_loss,
                         cross_attn_method, query_select_method, reg_max, reg_scale, layer_scale, mlp_act)
