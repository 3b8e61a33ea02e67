"""MatchboxNet-3x1x64 (Majumdar & Ginsburg, "MatchboxNet: 1D Time-Channel Separable Convolutional Neural
Network Architecture for Speech Commands Recognition", Interspeech 2020), as NVIDIA NeMo builds it from
examples/asr/conf/matchboxnet/matchboxnet_3x1x64_v1.yaml: a ConvASREncoder of JasperBlocks (the
collections/asr/parts/submodules/jasper.py ones) and a ConvASRDecoderClassification.

The features' channels and bins are the 1-D convolutions' channels: x (B, C, F, T) is read as
(B, C x F, T), so the complex variant's real and imaginary parts are 2 x 257 input channels.
"""

from __future__ import annotations

import torch
from torch import nn

from speechcls.models.registry import register

BN_EPS = 1e-3  # NeMo's BatchNorm1d(eps=1e-3, momentum=0.1) in every JasperBlock
PROLOGUE = (128, 11)  # channels, kernel: C1 of the paper, separable, no residual
KERNELS = (13, 15, 17)  # B = 3 residual blocks, one kernel each
EPILOGUE = ((128, 29, 2), (128, 1, 1))  # channels, kernel, dilation: C2 (separable) and C3 (an ordinary 1x1 conv)

# NeMo's preprocessor for this config (AudioToMFCCPreprocessor): 64 MFCC of 64 mel bands, n_fft 512, window
# 0.025 s, hop 0.01 s; the training crops or pads to 128 frames. speechcls computes no MFCC: log-mel of the
# same 64 bands is the nearest input it has (MFCC are their DCT, a fixed linear map of the same numbers).
PUBLISHED = {
    "variant": "mel", "n_mels": 64, "n_fft": 512, "win_length": 400, "hop_length": 160, "normalized": False,
    "log": True, "source": "NeMo matchboxnet_3x1x64_v1.yaml (AudioToMFCCPreprocessor)",
    "note": "the paper's input is 64 MFCC (the DCT of 64 log-mel bands); speechcls has log-mel, the nearest",
}  # fmt: skip


def _conv_bn(in_ch: int, out_ch: int, kernel: int, dilation: int, separable: bool) -> list[nn.Module]:
    """NeMo's _get_conv_bn_layer: a time-depthwise conv then a pointwise one (separable), or one conv; then BN."""
    padding = dilation * (kernel - 1) // 2  # 'same': the frames are kept
    if separable:
        convs = [
            nn.Conv1d(in_ch, in_ch, kernel, padding=padding, dilation=dilation, groups=in_ch, bias=False),
            nn.Conv1d(in_ch, out_ch, 1, bias=False),
        ]
    else:
        convs = [nn.Conv1d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False)]
    return [*convs, nn.BatchNorm1d(out_ch, eps=BN_EPS)]


class JasperBlock(nn.Module):
    """R sub-blocks of (conv, BN) with ReLU and dropout between them; the last one's output plus, for a
    residual block, a 1x1 conv + BN of the block's input, then ReLU and dropout. x: (B, C_in, T) -> (B, C_out, T).
    """

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int, repeat: int = 1, dilation: int = 1, residual: bool = False,
        separable: bool = True, dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(repeat):
            layers += _conv_bn(in_ch if i == 0 else out_ch, out_ch, kernel, dilation, separable)
            if i < repeat - 1:
                layers += [nn.ReLU(), nn.Dropout(dropout)]
        self.body = nn.Sequential(*layers)
        self.residual = nn.Sequential(*_conv_bn(in_ch, out_ch, 1, 1, separable=False)) if residual else None
        self.out = nn.Sequential(nn.ReLU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if self.residual is not None:
            y = y + self.residual(x)
        return self.out(y)


class MatchboxNet(nn.Module):
    """MatchboxNet-BxRxC. x: (B, C, F, T) -> logits (B, n_classes).

    Prologue C1 (128 channels, kernel 11); B residual blocks of R sub-blocks, `width` channels, kernels
    `kernels`; epilogue C2 (128, kernel 29, dilation 2) and C3 (128, kernel 1); all separable but C3; then
    global average pooling over time and a linear layer. Conv and linear weights are Xavier-uniform
    initialized, as NeMo's init_mode default.
    """

    def __init__(
        self, in_channels: int, n_classes: int, kernels: tuple[int, ...] = KERNELS, repeat: int = 1,
        width: int = 64, dropout: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        blocks = [JasperBlock(in_channels, PROLOGUE[0], PROLOGUE[1], dropout=dropout)]
        ch = PROLOGUE[0]
        for k in kernels:
            blocks.append(JasperBlock(ch, width, k, repeat, residual=True, dropout=dropout))
            ch = width
        (c2, k2, d2), (c3, k3, d3) = EPILOGUE
        blocks.append(JasperBlock(ch, c2, k2, dilation=d2, dropout=dropout))
        blocks.append(JasperBlock(c2, c3, k3, dilation=d3, separable=False, dropout=dropout))
        self.encoder = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool1d(1)
        self.decoder = nn.Linear(c3, n_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.encoder(torch.flatten(x, 1, 2))  # (B, C, F, T) -> (B, C x F, T) -> (B, 128, T)
        return self.decoder(torch.flatten(self.pool(x), 1))  # (B, 128, 1) -> (B, 128) -> (B, n_classes)


@register("matchboxnet-3x1x64", published=PUBLISHED)
def matchboxnet_3x1x64(in_shape: tuple[int, ...], n_classes: int, dropout: float = 0.0) -> MatchboxNet:
    """MatchboxNet-3x1x64 for `in_shape` (C, F, T): any size (its convolutions keep the frames). `dropout`:
    after every ReLU (the config's model.dropout, 0.0)."""
    c, f, _ = in_shape
    return MatchboxNet(c * f, n_classes, KERNELS, repeat=1, width=64, dropout=dropout)
