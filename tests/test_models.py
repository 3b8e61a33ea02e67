"""The models: the registry, BC-ResNet (and its SubSpectralNorm), MatchboxNet, the seed CNN under its new
name, and complexity(). Parameter counts are held to the papers; sizes to the reference code's layer shapes."""

import pytest
import torch
from torch import nn

from speechcls.models import build_model, canonical, complexity, names, published_input, register, settings
from speechcls.models.bcresnet import BCResBlock, SubSpectralNorm
from speechcls.models.matchboxnet import MatchboxNet
from speechcls.models.seed_cnn import SeedCNN

BCRESNETS = ["bcresnet-1", "bcresnet-2", "bcresnet-3", "bcresnet-6", "bcresnet-8"]
ALL = [*BCRESNETS, "matchboxnet-3x1x64", "seed"]
MINIMUM = {  # the least (C, F, T) each takes
    **dict.fromkeys(BCRESNETS, (1, 33, 1)),  # 33 bins halve (rounding up) to 17, 9, then the 5 its 5x5 conv needs
    "matchboxnet-3x1x64": (1, 1, 1),  # 'same' 1-D convolutions over time: any size
    "seed": (1, 78, 78),
}
CHAPTER = [(1, 128, 101), (1, 257, 101), (2, 257, 101)]  # mel 128, spectrogram, complex
KWS = [(1, 40, 101), (1, 64, 101)]  # BC-ResNet's and MatchboxNet's published inputs


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def first_conv(model: nn.Module) -> nn.Module:
    return next(m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))


def check_trains(name: str, shape: tuple[int, ...], n_classes: int = 12) -> None:
    """Batch 2 in training mode: logits of the right shape and a gradient that reaches the first layer;
    batch 1 in eval mode."""
    model = build_model(name, shape, n_classes)
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, n_classes) and torch.isfinite(logits).all()
    logits.logsumexp(1).sum().backward()
    grad = first_conv(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        assert model.eval()(torch.randn(1, *shape)).shape == (1, n_classes)


# --- the registry ---------------------------------------------------------------------------------------


def test_every_model_is_listed_once_and_the_old_seed_name_still_builds():
    assert names() == sorted(ALL)  # "seed_cnn" is an alias: not listed, but older checkpoints name it
    assert canonical("seed_cnn") == "seed" and canonical("bcresnet-8") == "bcresnet-8"
    assert isinstance(build_model("seed_cnn", (1, 80, 81), 10), SeedCNN)
    assert isinstance(build_model("seed", (1, 80, 81), 10), SeedCNN)
    listed = r"choose one of bcresnet-1, .*, seed \(also seed_cnn\)$"
    with pytest.raises(ValueError, match=f"unknown model 'resnet9': {listed}"):
        build_model("resnet9", (1, 40, 101), 12)
    with pytest.raises(ValueError, match="registered twice"):
        register("seed_cnn")(lambda in_shape, n_classes: nn.Identity())


def test_settings_are_each_builders_keywords_and_others_are_refused():
    assert settings("seed_cnn") == {"dropout2d": 0.2, "dropout": 0.5}
    assert settings("bcresnet-8") == {"dropout2d": 0.1}  # the reference's Dropout2d(0.1)
    assert settings("matchboxnet-3x1x64") == {"dropout": 0.0}  # the NeMo config's model.dropout
    model = build_model("bcresnet-1", (1, 40, 101), 12, dropout2d=0.3)
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout2d)} == {0.3}
    with pytest.raises(ValueError, match="model 'bcresnet-1' has no setting 'dropout': its settings are dropout2d"):
        build_model("bcresnet-1", (1, 40, 101), 12, dropout=0.5)


@pytest.mark.parametrize("shape", [(1, 40), (1, 0, 101), (0, 40, 101), (1, 40, 101, 1)])
def test_a_shape_that_is_not_three_positive_sizes_is_refused(shape):
    with pytest.raises(ValueError, match=r"in_shape must be \(channels, frequency bins, frames\), each at least 1"):
        build_model("matchboxnet-3x1x64", shape, 12)


def test_published_inputs_are_the_papers():
    bc = published_input("bcresnet-8")
    assert (bc["variant"], bc["n_mels"], bc["n_fft"], bc["win_length"], bc["hop_length"], bc["log"]) == (
        "mel", 40, 512, 480, 160, True,
    )  # fmt: skip
    mb = published_input("matchboxnet-3x1x64")
    assert (mb["n_mels"], mb["win_length"], mb["hop_length"]) == (64, 400, 160) and "MFCC" in mb["note"]
    assert published_input("seed_cnn") == {}


# --- every model, forward and backward ------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_each_model_trains_at_its_minimum_input_and_refuses_less(name):
    c, f, t = MINIMUM[name]
    check_trains(name, (c, f, t))
    smaller = (c, f - 1, t) if f > 1 else (c, f, t - 1)
    least = {"seed": "at least 78 of each", "matchboxnet-3x1x64": "each at least 1"}.get(name, "at least 33 bins")
    with pytest.raises(ValueError, match=least):
        build_model(name, smaller, 12)


@pytest.mark.parametrize("shape", KWS)
@pytest.mark.parametrize("name", [n for n in ALL if n != "seed"])  # the seed CNN needs 78 bins
def test_kws_models_train_at_the_published_inputs(name, shape):
    check_trains(name, shape)


@pytest.mark.parametrize("shape", CHAPTER)
@pytest.mark.parametrize("name", ALL)
def test_models_train_at_the_chapters_sizes(name, shape):
    check_trains(name, shape, n_classes=30)


# --- parameters and multiply-adds against the papers ----------------------------------------------------


@pytest.mark.parametrize(
    "name, paper",
    [
        ("bcresnet-1", 9.2e3),
        ("bcresnet-2", 27.3e3),
        ("bcresnet-3", 54.2e3),
        ("bcresnet-6", 188e3),
        ("bcresnet-8", 321e3),
    ],  # fmt: skip
)
def test_bcresnet_parameters_match_the_paper(name, paper):
    """Kim et al. 2021, Table 2 (40 log-mel bins, 12 classes); they round to 0.1k (1k for the large two)."""
    n = sum(p.numel() for p in build_model(name, (1, 40, 101), 12).parameters())
    assert abs(n - paper) / paper < 0.005


def test_bcresnet_1_counts_by_hand():
    """Parameters and conv multiply-adds of BC-ResNet-1 (base 8: widths 16 | 8, 12, 16, 20 | 32) on 40 x 101,
    layer by layer from the reference code's shapes. A block of width c: [1x1 conv in -> c + BN], 3x1 depthwise,
    SubSpectralNorm (5 bands: 2 x 5c), 1x3 depthwise + BN, 1x1 conv c -> c."""
    T = 101

    def block_params(c_in, c):
        return (c_in * c + 2 * c if c_in != c else 0) + 3 * c + 10 * c + 3 * c + 2 * c + c * c

    def block_macs(c_in, c, f_in, f):  # f_in bins in, f out (the 3x1 strides); the 1-D part sees one row
        return (c_in * c * f_in * T if c_in != c else 0) + 3 * c * f * T + 3 * c * T + c * c * T

    stages = [(16, 8, 20, 20), (8, 8, 20, 20), (8, 12, 20, 10), (12, 12, 10, 10), (12, 16, 10, 5)]
    stages += [(16, 16, 5, 5)] * 3 + [(16, 20, 5, 5)] + [(20, 20, 5, 5)] * 3
    params = 25 * 16 + 2 * 16  # head 5x5 conv 1 -> 16, BN
    params += sum(block_params(c_in, c) for c_in, c, _, _ in stages)
    params += 25 * 20 + 20 * 32 + 2 * 32 + 32 * 12 + 12  # depthwise 5x5, 1x1 20 -> 32, BN, 1x1 to 12 (bias)
    macs = 25 * 16 * 20 * T  # head: 20 x 101 out
    macs += sum(block_macs(*s) for s in stages)
    macs += 25 * 20 * 1 * T + 20 * 32 * T + 32 * 12  # the 5x5 leaves 1 x 101; then pooled before the last 1x1
    got = complexity(build_model("bcresnet-1", (1, 40, 101), 12), (1, 40, 101))
    assert params == 9232  # the paper's "9.2k"
    assert got == {"parameters": params, "macs": macs}
    assert macs == 2_482_156  # the paper's 3.6M "mult" also counts elementwise work (BN, ReLU, the averages)


def test_bcresnet_strides_and_dilations_are_the_papers():
    model = build_model("bcresnet-8", (1, 40, 101), 12)
    blocks = [m for m in model.modules() if isinstance(m, BCResBlock)]
    assert [b.f1[0].dilation[1] for b in blocks] == [1, 1, 2, 2, 4, 4, 4, 4, 8, 8, 8, 8]
    bins = []
    for b in blocks:
        b.register_forward_hook(lambda m, i, out: bins.append(out.shape[2]))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 1, 40, 101))
    assert bins == [20, 20, 10, 10, 5, 5, 5, 5, 5, 5, 5, 5]
    assert [b.f2[-1].bn.num_features for b in blocks[::2]] == [64 * 5, 96 * 5, 128 * 5, 128 * 5, 160 * 5, 160 * 5]


def test_matchboxnet_parameters_by_hand_and_against_the_paper():
    """Separable block k, c_in -> c: depthwise k * c_in, pointwise c_in * c, BN 2c; residual 1x1 + BN."""

    def sep(k, c_in, c):
        return k * c_in + c_in * c + 2 * c

    encoder = sep(11, 64, 128)  # prologue on 64 features
    residual = 2 * 64  # each residual's BN; its 1x1 conv is c_in * 64
    encoder += sep(13, 128, 64) + 128 * 64 + residual + sep(15, 64, 64) + 64 * 64 + residual
    encoder += sep(17, 64, 64) + 64 * 64 + residual
    encoder += sep(29, 64, 128) + 128 * 128 + 2 * 128  # C2 (dilation adds none), C3 an ordinary 1x1 conv
    assert encoder == 73_344

    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(build_model("matchboxnet-3x1x64", (1, 64, 101), 12)) == encoder + 128 * 12 + 12  # 74,892
    # the paper's 77K and 93K (3x1x64, 3x2x64) are with 30 classes (Speech Commands v1)
    three_by_one = count(build_model("matchboxnet-3x1x64", (1, 64, 101), 30))
    three_by_two = count(MatchboxNet(64, 30, repeat=2))
    assert three_by_one == encoder + 128 * 30 + 30 == 77_214
    assert round(three_by_one, -3) == 77_000 and round(three_by_two, -3) == 93_000
    # the complex variant's two channels are separate 1-D channels: 2 x 257 depthwise inputs
    assert count(build_model("matchboxnet-3x1x64", (2, 257, 101), 12)) - count(
        build_model("matchboxnet-3x1x64", (1, 257, 101), 12)
    ) == 257 * (11 + 128)


# --- SubSpectralNorm ------------------------------------------------------------------------------------


def ssn_reference(x, weight, bias, mean, var, bands, training, eps=1e-5):
    """Per channel c and band k (rows lo:hi): batch norm over (batch, rows, frames) with the (c * 5 + k)-th
    weight, bias and running statistics; float64 loops."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        for k, (lo, hi) in enumerate(bands):
            i = c * len(bands) + k
            v = x[:, c, lo:hi]
            m, s = (v.mean(), v.var(unbiased=False)) if training else (mean[i], var[i])
            out[:, c, lo:hi] = (v - m) / torch.sqrt(s + eps) * weight[i] + bias[i]
    return out


@pytest.mark.parametrize(
    "freq, bands",
    [
        (10, [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]),  # 5 divides 10: the reference's reshape
        (7, [(0, 2), (2, 4), (4, 5), (5, 6), (6, 7)]),  # it does not: the first 7 % 5 bands are one bin wider
        (13, [(0, 3), (3, 6), (6, 9), (9, 11), (11, 13)]),
    ],
)
def test_subspectral_norm_normalizes_each_band_on_its_own(freq, bands):
    x = torch.randn(3, 2, freq, 4, dtype=torch.float64) * 3 + 1
    ssn = SubSpectralNorm(2).double()
    with torch.no_grad():
        ssn.bn.weight.uniform_(0.5, 2)
        ssn.bn.bias.uniform_(-1, 1)
    w, b = ssn.bn.weight.detach().clone(), ssn.bn.bias.detach().clone()
    y = ssn(x)
    torch.testing.assert_close(y, ssn_reference(x, w, b, None, None, bands, training=True))
    # running statistics: momentum 0.1 from (0, 1), the variance unbiased, as nn.BatchNorm2d
    batch_mean = torch.stack([x[:, c, lo:hi].mean() for c in range(2) for lo, hi in bands])
    batch_var = torch.stack([x[:, c, lo:hi].var(unbiased=True) for c in range(2) for lo, hi in bands])
    torch.testing.assert_close(ssn.bn.running_mean, 0.1 * batch_mean)
    torch.testing.assert_close(ssn.bn.running_var, 0.9 + 0.1 * batch_var)
    assert ssn.bn.num_batches_tracked.item() == 1
    # eval: the running statistics, and nothing updated
    y_eval = ssn.eval()(x)
    ref = ssn_reference(x, w, b, 0.1 * batch_mean, 0.9 + 0.1 * batch_var, bands, training=False)
    torch.testing.assert_close(y_eval, ref)
    assert ssn.bn.num_batches_tracked.item() == 1
    # gradients reach the input (numerically right on a small slice) and every band's weight and bias
    ssn.train()
    assert torch.autograd.gradcheck(ssn, (x[:2, :, :, :2].clone().requires_grad_(True),))
    ssn(x).pow(2).sum().backward()
    assert (ssn.bn.weight.grad != 0).all() and (ssn.bn.bias.grad != 0).all()
    # a channels_last input gives the same numbers
    x4 = x.detach().to(memory_format=torch.channels_last)
    torch.testing.assert_close(ssn.eval()(x4), ssn.eval()(x.detach()))


# --- complexity -----------------------------------------------------------------------------------------


class Tiny(nn.Module):
    """conv 3x3 1 -> 4 (no padding), BN, ReLU, depthwise 3x3 (padded), flatten, linear 48 -> 3."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False)
        self.fc = nn.Linear(4 * 4 * 3, 3)

    def forward(self, x):  # (B, 1, 6, 5) -> (B, 4, 4, 3) -> (B, 3)
        return self.fc(torch.flatten(self.dw(torch.relu(self.bn(self.conv(x)))), 1))


def test_complexity_counts_convolutions_and_matrix_products_by_hand():
    model = Tiny().train()
    got = complexity(model, (1, 6, 5))
    outputs = 4 * 4 * 3  # 4 channels of 4 x 3
    macs = outputs * 9 * 1 + outputs * 9 + 48 * 3  # conv: 9 taps of 1 channel; depthwise: 9 taps of its own; linear
    params = (4 * 9 + 4) + 2 * 4 + 4 * 9 + (48 * 3 + 3)
    assert got == {"parameters": params, "macs": macs} == {"parameters": 231, "macs": 1008}
    assert model.training and model.bn.num_batches_tracked.item() == 0  # the model itself is left alone
