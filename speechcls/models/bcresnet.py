"""BC-ResNet (Kim et al., "Broadcasted Residual Learning for Efficient Keyword Spotting", Interspeech 2021),
as in the authors' code (Qualcomm-AI-research/bcresnet: bcresnet.py, subspectralnorm.py), registered as
bcresnet-1, -2, -3, -6 and -8 (tau, the width multiplier: 8 x tau base channels).

Most of each block works on one frequency-averaged row (a 1-D temporal convolution) and is broadcast back
over the frequency axis, which the block's 2-D part (a frequency-depthwise convolution) keeps; that is
where the model's small size and cost come from.

Other frequency sizes than the paper's 40 log-mel bins: SubSpectralNorm normalizes 5 contiguous sub-bands
of the frequency axis separately. The reference reshapes the axis into 5 equal bands, so it needs the
bins at every stage (F/2, F/4, F/8, rounded up) divisible by 5: 40 and 80 are; 64, 128 and 257 are not.
Here a sub-band count that does not divide the bins gives bands of near-equal width (the first F % 5 one
bin wider, torch.tensor_split's rule), each normalized on its own: the same normalization the paper
describes, and exactly the reference where 5 divides F. The alternatives were worse: padding the
frequency axis to a multiple of 40 adds bins of made-up values (and 25 % more work at 64 or 128 bins), and
a per-stage sub-band count that divides F degenerates to one band (plain BatchNorm) where F is prime
(e.g. 129 bins x 2 = 257) and makes the weights' shapes depend on the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from speechcls.models.registry import register

SUB_BANDS = 5  # SubSpectralNorm's sub-bands: the reference's SubSpectralNorm(out_plane, 5), the paper's best
STAGE_BLOCKS = (2, 2, 4, 4)  # BC-ResBlocks per stage
STRIDED_STAGES = (1, 2)  # the first block of these stages halves the frequency axis (stride (2, 1))
CLASSIFIER_FREQ = 5  # the classifier's depthwise 5x5 convolution has no frequency padding: it needs 5 bins
# the head and the two strided stages each halve the bins, rounding up: 33 -> 17 -> 9 -> 5
MIN_FREQ = 33
MIN_FRAMES = 1  # every temporal convolution is padded to keep the frames ("same"), and none strides in time
TAUS = (1, 2, 3, 6, 8)  # the registered widths, as in the paper's tables

# The input of the paper and the reference code (utils.py LogMel): log(mel + 1e-6) of 40 mel bins,
# n_fft 512, window 480, hop 160 (101 frames of a one-second clip), no window normalization.
PUBLISHED = {
    "variant": "mel", "n_mels": 40, "n_fft": 512, "win_length": 480, "hop_length": 160, "normalized": False,
    "log": True, "source": "Kim et al. 2021; Qualcomm-AI-research/bcresnet utils.py (LogMel)",
}  # fmt: skip


def _halved(n: int) -> int:
    """Bins after a stride-2 convolution with 'same' padding (the head's 5x5 and the blocks' 3x1)."""
    return (n + 1) // 2


def check_input(freq: int, frames: int, name: str = "BC-ResNet") -> None:
    """Refuse inputs the classifier's 5x5 convolution cannot take, before any training."""
    if _halved(_halved(_halved(freq))) < CLASSIFIER_FREQ or frames < MIN_FRAMES:
        raise ValueError(
            f"features of {freq} frequency bins x {frames} frames are too small for {name}, which needs at least "
            f"{MIN_FREQ} bins (halved three times to the {CLASSIFIER_FREQ} its classifier's 5x5 convolution needs) "
            f"and {MIN_FRAMES} frame (e.g. --n-mels 40, the paper's input)"
        )


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics and affine parameters for each of `sub_bands` contiguous bands of
    the frequency axis (Chang et al., "SubSpectral Normalization for Neural Audio Data Processing", ICASSP
    2021). x: (B, C, F, T) -> (B, C, F, T).

    The parameters are the reference's: one BatchNorm2d over C x sub_bands channels, channel c's band k at
    c * sub_bands + k. Where sub_bands divides F that is the reference's reshape (one BatchNorm call);
    otherwise the bands differ in width by one bin and each is normalized with its own slice of those
    parameters and running statistics. Under --sync-bn only the divisible path is synchronized (it calls
    the converted `bn`); the other keeps each rank's own batch statistics.
    """

    def __init__(self, channels: int, sub_bands: int = SUB_BANDS, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.sub_bands = sub_bands
        self.bn = nn.BatchNorm2d(channels * sub_bands, eps=eps, momentum=momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, f, t = x.shape
        s = self.sub_bands
        if f < s:
            raise ValueError(f"SubSpectralNorm needs at least {s} frequency bins (one per sub-band), got {f}")
        if f % s == 0:
            # reshape, not view: a channels_last input is not viewable this way
            return self.bn(x.reshape(b, c * s, f // s, t)).reshape(b, c, f, t)
        return self._uneven(x)

    def _uneven(self, x: torch.Tensor) -> torch.Tensor:
        bn, c, s = self.bn, x.shape[1], self.sub_bands
        weight, bias = bn.weight.view(c, s), bn.bias.view(c, s)  # column k: band k's, for every channel
        mean, var = bn.running_mean.view(c, s), bn.running_var.view(c, s)
        update = self.training  # as nn.BatchNorm2d (track_running_stats): batch statistics in training
        out = []
        for k, band in enumerate(x.tensor_split(s, dim=2)):  # (B, C, F_k, T), F_k = ceil or floor of F / s
            # a strided column of a buffer is not updated in place by every backend: update a copy, write it back
            band_mean, band_var = mean[:, k].clone(), var[:, k].clone()
            out.append(F.batch_norm(band, band_mean, band_var, weight[:, k], bias[:, k], update, bn.momentum, bn.eps))
            if update:
                with torch.no_grad():
                    mean[:, k] = band_mean
                    var[:, k] = band_var
        if update:
            bn.num_batches_tracked.add_(1)
        return torch.cat(out, dim=2)


class BCResBlock(nn.Module):
    """One BC-ResBlock. x: (B, C_in, F, T) -> (B, C_out, F / stride, T).

    f2 (2-D): [1x1 conv, BN, ReLU when the width changes] -> frequency-depthwise 3x1 conv -> SubSpectralNorm;
    f1 (1-D, on the frequency average): temporal depthwise 1x3 conv (dilated) -> BN -> swish -> 1x1 conv ->
    channel dropout. Out: ReLU(f1 broadcast over frequency + f2 [+ x where the width and bins are kept]).
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, dilation: int, dropout2d: float, sub_bands: int):
        super().__init__()
        self.transition = in_ch != out_ch  # a transition block has no identity shortcut, as in the reference
        layers: list[nn.Module] = []
        if self.transition:
            layers += [nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]
        layers += [
            nn.Conv2d(out_ch, out_ch, (3, 1), (stride, 1), (1, 0), groups=out_ch, bias=False),
            SubSpectralNorm(out_ch, sub_bands),
        ]
        self.f2 = nn.Sequential(*layers)
        self.f1 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, (1, 3), padding=(0, dilation), dilation=(1, dilation), groups=out_ch, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.SiLU(),
            nn.Conv2d(out_ch, out_ch, 1, bias=False),
            nn.Dropout2d(dropout2d),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        aux = self.f2(x)  # (B, C, F', T)
        out = self.f1(aux.mean(dim=2, keepdim=True)) + aux  # (B, C, 1, T) broadcast over the F' bins
        if not self.transition:
            out = out + x
        return F.relu(out)


class BCResNet(nn.Module):
    """BC-ResNet-tau. x: (B, C, F, T) -> logits (B, n_classes).

    Head 5x5 conv (stride 2 in frequency, 16 tau channels), BN, ReLU; four stages of 2, 2, 4, 4 BC-ResBlocks
    of 8, 12, 16, 20 x tau channels (the first block of stages 2 and 3 halves the frequency axis; the
    temporal convolutions of stage i dilate by 2^i: 1, 2, 4, 8); classifier: depthwise 5x5 conv (no
    frequency padding), 1x1 conv to 32 tau channels, BN, ReLU, global average pool, 1x1 conv to the classes.
    """

    def __init__(
        self, in_channels: int, n_classes: int, tau: float, dropout2d: float = 0.1, sub_bands: int = SUB_BANDS
    ):
        super().__init__()
        base = int(tau * 8)  # the reference's BCResNets(int(tau * 8))
        # head, the four stages, the classifier's last conv: the reference's self.c
        widths = [base * 2, base, int(base * 1.5), base * 2, int(base * 2.5), base * 4]
        self.head = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 5, (2, 1), 2, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks = []
        for stage, n in enumerate(STAGE_BLOCKS):
            for i in range(n):
                stride = 2 if stage in STRIDED_STAGES and i == 0 else 1
                in_ch = widths[stage] if i == 0 else widths[stage + 1]
                blocks.append(BCResBlock(in_ch, widths[stage + 1], stride, 2**stage, dropout2d, sub_bands))
        self.blocks = nn.Sequential(*blocks)
        c = widths[-2]
        self.classifier = nn.Sequential(
            nn.Conv2d(c, c, 5, padding=(0, 2), groups=c, bias=False),
            nn.Conv2d(c, widths[-1], 1, bias=False),
            nn.BatchNorm2d(widths[-1]),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(widths[-1], n_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.head(x))  # (B, 20 tau, ceil(F / 8), T)
        return torch.flatten(self.classifier(x), 1)  # (B, n_classes, 1, 1) -> (B, n_classes)


def _builder(tau: int):
    name = f"bcresnet-{tau}"

    def build(in_shape: tuple[int, ...], n_classes: int, dropout2d: float = 0.1) -> BCResNet:
        c, f, t = in_shape
        check_input(f, t, name)
        return BCResNet(c, n_classes, tau, dropout2d)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = (
        f"BC-ResNet-{tau} for `in_shape` (C, F, T), F >= {MIN_FREQ}. `dropout2d`: the channel dropout after each "
        "block's 1-D part (the reference's Dropout2d(0.1))."
    )
    return build


for _tau in TAUS:
    register(f"bcresnet-{_tau}", published=PUBLISHED)(_builder(_tau))
