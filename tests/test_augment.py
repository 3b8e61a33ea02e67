"""Augmentation and the per-batch pipeline: determinism from (seed, epoch, position), each augmentation
against a literal numpy computation with the drawn parameters, the plain pipeline against torchaudio,
refusals, mixup."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torchaudio

from speechcls.audio.augment import (
    AugmentConfig,
    band_mask,
    draw_bands,
    draw_noise,
    draw_shifts,
    draw_speeds,
    mask_bands,
    mix_noise,
    mixup,
    speed_factors,
    speed_perturb,
    time_shift,
)
from speechcls.audio.features import FeatureExtractor
from speechcls.audio.frontend import InputSpec
from speechcls.audio.pipeline import Pipeline
from speechcls.config import FeatureParams

B, L = 8, 16_000
MEL40 = FeatureParams("mel", n_mels=40)
ALL = AugmentConfig(
    speed=0.1, shift_ms=100, noise_prob=0.8, noise_volume=0.1, freq_masks=2, freq_width=7, time_masks=2, time_width=20
)


def waves(seed: int = 0, batch: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, L, generator=g) * 2 - 1) * 0.5  # (B, L) in [-0.5, 0.5)


def noise_recordings() -> list[torch.Tensor]:
    """Three recordings of unequal length whose every sample differs, so a crop's place shows."""
    return [torch.sin(torch.arange(n, dtype=torch.float64) * (0.01 + 0.003 * i)).float() for i, n in
            enumerate((L + 5_000, 3 * L, L))]  # fmt: skip


def torchaudio_mel40(wave: torch.Tensor) -> torch.Tensor:
    """The chapter's mel settings with 40 filters, straight from torchaudio: (B, L) -> (B, 1, 40, 101)."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16_000, n_fft=512, win_length=480, hop_length=160, n_mels=40, power=2.0, normalized=True
    )
    return mel(wave).unsqueeze(1)


def numpy_shift(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    out = np.zeros_like(x)
    for b, s in enumerate(shifts):
        if s >= 0:
            out[b, s:] = x[b, : x.shape[1] - s]
        else:
            out[b, : x.shape[1] + s] = x[b, -s:]
    return out


# --- determinism ---------------------------------------------------------------------------------------
def test_augmentation_is_a_function_of_seed_epoch_position():
    x = waves()
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, noise_recordings(), seed=3)
    out = p(x, 2, 128)
    # a fresh pipeline (a resumed run) and a repeat give the same bits
    again = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, noise_recordings(), seed=3)
    assert torch.equal(again(x, 2, 128), out) and torch.equal(p(x, 2, 128), out)
    # another batch position, epoch or seed draws other augmentations
    other = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, noise_recordings(), seed=4)
    for y in (p(x, 2, 136), p(x, 3, 128), other(x, 2, 128)):
        assert not torch.equal(y, out)
    assert torch.isfinite(out).all() and out.shape == (B, 1, 40, 101)
    # the recordings travel with .to(device) but stay out of a saved state
    assert "noise" in dict(p.named_buffers()) and "noise" not in p.state_dict()


def test_streams_are_independent():
    """Turning the masks on leaves the shift's draws alone: shift + masks = masks of shift alone."""
    x = waves()
    shift = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), AugmentConfig(shift_ms=50))
    masked = AugmentConfig(shift_ms=50, freq_masks=1, freq_width=9)
    both = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), masked)
    bands = draw_bands(both.rng(0, 40, "masks"), B, 1, 9, 40)
    expected = shift(x, 0, 40).numpy().copy()
    for b, (s, w) in enumerate(bands[:, 0]):
        expected[b, :, s : s + w] = 0.0
    np.testing.assert_array_equal(both(x, 0, 40).numpy(), expected)


# --- each augmentation against a literal computation -------------------------------------------------------
def test_shift_moves_by_the_drawn_samples_with_zeros():
    x = waves()
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(), AugmentConfig(shift_ms=100))
    assert p.max_shift == 1_600
    shifts = draw_shifts(p.rng(1, 16, "shift"), B, 1_600)
    assert np.abs(shifts).max() <= 1_600 and len(set(shifts)) > 1
    shifted = numpy_shift(x.numpy(), shifts)
    np.testing.assert_array_equal(time_shift(x, torch.from_numpy(shifts), 1_600).numpy(), shifted)
    # the pipeline computes the features of exactly that waveform
    torch.testing.assert_close(p(x, 1, 16), torchaudio_mel40(torch.from_numpy(shifted)), rtol=1e-5, atol=1e-7)


def test_shift_draws_cover_both_ends():
    shifts = draw_shifts(np.random.default_rng(0), 2_000, 3)
    assert set(shifts.tolist()) == set(range(-3, 4))


def test_speed_moves_pitch_by_the_factor_and_keeps_the_clip_centred():
    """A 1 kHz tone burst in the middle: played at factor f it is a (1000 f) Hz burst, still in the middle
    and f times shorter, in a clip of the same length."""
    t = torch.arange(L) / 16_000
    burst = torch.zeros(L)
    burst[4_000:12_000] = torch.hann_window(8_000)
    x = (torch.sin(2 * torch.pi * 1_000 * t) * burst)[None].repeat(5, 1)
    factors = speed_factors(0.1)
    np.testing.assert_allclose(factors, [0.9, 0.95, 1.0, 1.05, 1.1])
    out = speed_perturb(x, np.arange(5), factors, 16_000)
    loud = torch.nonzero(x[0].abs() > 0.01).squeeze(1)
    SPAN = (loud[-1] - loud[0]).item()
    assert out.shape == x.shape and torch.equal(out[2], x[2])  # factor 1: untouched
    for k, f in enumerate(factors):
        peak_hz = torch.fft.rfft(out[k]).abs().argmax().item()  # 1 Hz bins
        assert abs(peak_hz - 1_000 * f) <= 2, (f, peak_hz)
        loud = torch.nonzero(out[k].abs() > 0.01).squeeze(1)
        centre, span = (loud[0] + loud[-1]).item() / 2, (loud[-1] - loud[0]).item()
        assert abs(centre - L / 2) < 40 and abs(span - SPAN / f) < 80, (f, centre, span)


def test_speed_is_torchaudio_resampling_centred():
    """Each example is torchaudio's resampling of itself from 16000 f Hz to 16000 Hz, centred: the
    faster ones padded with zeros around, the slower ones' middle L samples kept."""
    x = waves(batch=12)
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(), AugmentConfig(speed=0.2))
    choice = draw_speeds(p.rng(2, 24, "speed"), 12)
    assert len(set(choice.tolist())) >= 4
    factors = speed_factors(0.2)
    out = speed_perturb(x, choice, factors, 16_000)
    for b, k in enumerate(choice):
        one = torchaudio.functional.resample(x[b : b + 1], round(16_000 * factors[k]), 16_000)[0]
        m = len(one)
        left = (L - m) // 2
        expected = one[(m - L) // 2 :][:L] if m >= L else torch.nn.functional.pad(one, (left, L - m - left))
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-6)
    # the pipeline computes the features of exactly that waveform
    torch.testing.assert_close(p(x, 2, 24), torchaudio_mel40(out), rtol=1e-5, atol=1e-7)
    assert set(draw_speeds(np.random.default_rng(0), 1_000).tolist()) == set(range(5))


def test_noise_mixing_adds_volume_times_crop():
    x = waves()
    rec = noise_recordings()
    bank = torch.cat(rec).numpy()
    cfg = AugmentConfig(noise_prob=0.5, noise_volume=0.3)
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(), cfg, rec)
    starts, volumes = draw_noise(p.rng(0, 8, "noise"), B, L, np.array([len(r) for r in rec]), 0.5, 0.3)
    assert (volumes == 0).any() and (volumes > 0).any()  # both kinds of example in the batch
    crops = np.stack([bank[s : s + L] for s in starts])
    expected = np.clip(x.numpy() + volumes[:, None] * crops, -1.0, 1.0)
    mixed = mix_noise(x, torch.from_numpy(bank), torch.from_numpy(starts), torch.from_numpy(volumes))
    np.testing.assert_allclose(mixed.numpy(), expected, rtol=0, atol=6e-8)  # 1 ulp below 1: a fused multiply-add
    np.testing.assert_array_equal(mixed.numpy()[volumes == 0], x.numpy()[volumes == 0])
    torch.testing.assert_close(p(x, 0, 8), torchaudio_mel40(torch.from_numpy(expected)), rtol=1e-5, atol=1e-7)


def test_noise_is_clamped_to_the_clip_range():
    x = torch.full((2, L), 0.9)
    loud = [torch.ones(L)]
    out = mix_noise(x, loud[0], torch.zeros(2, dtype=torch.int64), torch.tensor([0.5, 0.05]))
    np.testing.assert_array_equal(out[0].numpy(), np.ones(L, dtype=np.float32))
    np.testing.assert_allclose(out[1].numpy(), np.float32(0.9) + np.float32(0.05), rtol=0, atol=0)


def test_noise_crops_stay_inside_one_recording():
    lengths = np.array([L + 3, 2 * L, L])
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    starts, volumes = draw_noise(np.random.default_rng(1), 5_000, L, lengths, 0.8, 0.1)
    rec = np.searchsorted(offsets, starts, side="right") - 1
    assert (starts + L <= offsets[rec] + lengths[rec]).all()
    assert set(rec.tolist()) == {0, 1, 2}  # every recording is used
    assert abs((volumes > 0).mean() - 0.8) < 0.03 and volumes.max() <= 0.1


def test_masks_zero_exactly_the_drawn_bands():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 2, 40, 101, generator=g) + 1.0  # no zeros of its own; complex-like: 2 channels
    cfg = AugmentConfig(freq_masks=2, freq_width=7, time_masks=2, time_width=20)
    p = Pipeline(None, InputSpec(), cfg)
    rng = p.rng(4, 24, "masks")
    freq, time = draw_bands(rng, B, 2, 7, 40), draw_bands(rng, B, 2, 20, 101)  # the pipeline's draw order
    expected = x.numpy().copy()
    for b in range(B):
        for s, w in freq[b]:
            expected[b, :, s : s + w, :] = 0.0
        for s, w in time[b]:
            expected[b, :, :, s : s + w] = 0.0
    assert (expected == 0).any()
    np.testing.assert_array_equal(p(x, 4, 24).numpy(), expected)


def test_band_draws_follow_specaugment():
    bands = draw_bands(np.random.default_rng(2), 3_000, 2, 7, 40)
    start, width = bands[..., 0], bands[..., 1]
    assert set(width.ravel().tolist()) == set(range(8))  # [0, F], the paper's range
    assert start.min() == 0 and (start + width).max() == 40 and (start + width <= 40).all()
    # a width above the axis is capped at the axis
    assert draw_bands(np.random.default_rng(0), 100, 1, 50, 10)[..., 1].max() <= 10


def test_mask_bands_alone_and_refusal():
    x = torch.ones(2, 1, 4, 5)
    freq = torch.tensor([[[1, 2]], [[0, 0]]])  # example 0: bins 1-2; example 1: nothing
    time = torch.tensor([[[4, 1]], [[0, 5]]])  # example 0: frame 4; example 1: every frame
    expected = np.ones((2, 1, 4, 5), dtype=np.float32)
    expected[0, :, 1:3, :] = expected[0, :, :, 4] = -1.0
    expected[1] = -1.0
    np.testing.assert_array_equal(mask_bands(x, freq, time, value=-1.0).numpy(), expected)
    np.testing.assert_array_equal(mask_bands(x, None, time[:1].expand(2, 1, 2)).numpy()[:, 0, :, 4], 0.0)
    assert mask_bands(x) is x and torch.equal(x, torch.ones(2, 1, 4, 5))  # never in place
    with pytest.raises(ValueError, match="dim 2 .* or 3"):
        band_mask(freq, 4, dim=1)


# --- off means identity; the plain pipeline is torchaudio + log + standardization ---------------------------
def test_all_off_probability_zero_and_eval_are_identity():
    x = waves()
    rec = noise_recordings()
    plain = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True))(x, 0, 0)
    off = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), AugmentConfig(noise_volume=0.1, freq_width=5), rec)
    assert AugmentConfig().off and torch.equal(off(x, 5, 64), plain)
    evaluating = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, rec).eval()
    assert torch.equal(evaluating(x, 5, 64), plain)
    assert not torch.equal(evaluating.train()(x, 5, 64), plain)
    # a noise probability of 0 < p keeps some clips untouched: here p = 1e-9 touches none
    rare = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), AugmentConfig(noise_prob=1e-9, noise_volume=0.1), rec)
    assert torch.equal(rare(x, 0, 0), plain)


def test_plain_pipeline_is_torchaudio_log_and_standardization():
    x = waves()
    g = torch.Generator().manual_seed(1)
    mean, std = torch.randn(1, 40, generator=g), torch.rand(1, 40, generator=g) + 0.5
    spec = InputSpec(log=True, mean=tuple(map(tuple, mean.tolist())), std=tuple(map(tuple, std.tolist())))
    expected = (torch.log(torchaudio_mel40(x) + 1e-6) - mean[None, :, :, None]) / std[None, :, :, None]
    out = Pipeline(FeatureExtractor(MEL40), spec)(x, 0, 0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # a feature store's batch goes straight to the log and standardization
    feats = torchaudio_mel40(x)
    torch.testing.assert_close(Pipeline(None, spec)(feats, 0, 0), expected, rtol=1e-5, atol=1e-5)
    # cmn: then each example's mean over the frames taken off, per bin; saved and read back with the run
    cmn = replace(spec, cmn=True)
    centred = expected - expected.mean(3, keepdim=True)
    torch.testing.assert_close(Pipeline(None, cmn)(feats, 0, 0), centred, rtol=1e-5, atol=1e-5)
    assert InputSpec.from_dict(cmn.to_dict()) == cmn and not InputSpec.from_dict(spec.to_dict()).cmn
    assert not InputSpec(cmn=True).identity and InputSpec().identity


def test_pipeline_runs_without_grad_and_autocast_in_float32():
    x = waves().requires_grad_()
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, noise_recordings())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = p(x, 0, 0)
    assert out.dtype == torch.float32 and not out.requires_grad


# --- refusals ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cfg, message",
    [
        (dict(shift_ms=-1), "shift_ms must be a finite number >= 0, got -1"),
        (dict(speed=0.5), "require 0 <= speed < 0.5"),
        (dict(speed=-0.1), "speed must be a finite number >= 0, got -0.1"),
        (dict(noise_prob=1.5, noise_volume=0.1), "require 0 <= noise_prob <= 1, got 1.5"),
        (dict(noise_prob=0.8), "noise_prob 0.8 with noise_volume 0"),
        (dict(freq_masks=2), "freq_masks 2 with freq_width 0 masks nothing"),
        (dict(time_masks=1, time_width=2.5), "time_width must be a whole number >= 0, got 2.5"),
        (dict(mixup=float("nan")), "mixup must be a finite number >= 0, got nan"),
    ],
)
def test_config_refuses_bad_values(cfg, message):
    with pytest.raises(ValueError, match=message):
        AugmentConfig(**cfg).validate()


def test_pipeline_refusals():
    ex = FeatureExtractor(MEL40)
    with pytest.raises(ValueError, match="noise_prob 0.8 needs background-noise recordings"):
        Pipeline(ex, InputSpec(), AugmentConfig(noise_prob=0.8, noise_volume=0.1))
    with pytest.raises(ValueError, match="noise recording 1 has 15999 samples, shorter than one clip"):
        Pipeline(ex, InputSpec(), AugmentConfig(noise_prob=0.8, noise_volume=0.1), [torch.zeros(L), torch.zeros(L - 1)])
    with pytest.raises(ValueError, match=r"noise recording 0 has shape \(2, 16000\)"):
        Pipeline(ex, InputSpec(), AugmentConfig(noise_prob=0.8, noise_volume=0.1), [torch.zeros(2, L)])
    with pytest.raises(ValueError, match="--variant waveform .* or set speed 0, shift_ms 0 and noise_prob 0"):
        Pipeline(None, InputSpec(), AugmentConfig(shift_ms=100))
    with pytest.raises(ValueError, match=r"speed perturbation \(speed 0.1\)"):
        Pipeline(None, InputSpec(), AugmentConfig(speed=0.1))
    with pytest.raises(ValueError, match="the waveform variant gives int16 samples"):
        Pipeline(FeatureExtractor(FeatureParams("waveform")), InputSpec())
    with pytest.raises(ValueError, match="seed must be a whole number >= 0"):
        Pipeline(ex, InputSpec(), seed=-1)
    p = Pipeline(ex, InputSpec(), AugmentConfig(shift_ms=10))
    with pytest.raises(ValueError, match="featurize with --variant waveform"):
        p(torch.zeros(2, 1, 40, 101), 0, 0)  # features given to a waveform pipeline that shifts
    with pytest.raises(ValueError, match="position must be a whole number >= 0"):
        p(waves(), 0, -8)
    with pytest.raises(ValueError, match=r"a batch of shape \(2, 1, 16000\)"):
        p(torch.zeros(2, 1, L), 0, 0)
    with pytest.raises(ValueError, match=r"dtype torch.int16: the pipeline takes float waveforms"):
        p(torch.zeros(2, L, dtype=torch.int16), 0, 0)
    with pytest.raises(ValueError, match="without a feature extractor"):
        Pipeline(None, InputSpec())(waves(), 0, 0)


# --- mixup ---------------------------------------------------------------------------------------------------
def test_mixup_is_a_convex_combination_with_a_permutation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 40, 101, generator=g), torch.arange(16)
    p = Pipeline(None, InputSpec(), AugmentConfig(mixup=0.2))
    mixed, y_a, y_b, lam = mixup(x, y, 0.2, p.mixup_rng(3, 32))
    assert 0 < lam < 1 and torch.equal(y_a, y)
    perm = y_b  # labels are the example indices here
    assert sorted(perm.tolist()) == list(range(16)) and not torch.equal(perm, y)
    expected = lam * x.double() + (1 - lam) * x.double()[perm]
    torch.testing.assert_close(mixed.double(), expected, rtol=0, atol=1e-6)
    again = mixup(x, y, 0.2, p.mixup_rng(3, 32))
    assert again[3] == lam and torch.equal(again[2], y_b) and torch.equal(again[0], mixed)
    assert mixup(x, y, 0.2, p.mixup_rng(3, 48))[3] != lam
    # alpha 0 is off
    same, ya, yb, one = mixup(x, y, 0.0, p.mixup_rng(0, 0))
    assert same is x and ya is y and yb is y and one == 1.0
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0, got -1"):
        mixup(x, y, -1.0, p.mixup_rng(0, 0))


# --- CUDA: the same draws, the same augmentation -----------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_pipeline_matches_cpu():
    x = waves()
    p = Pipeline(FeatureExtractor(MEL40), InputSpec(log=True), ALL, noise_recordings(), seed=1)
    cpu = p(x, 1, 64)
    gpu = p.to("cuda")(x.cuda(), 1, 64)
    assert gpu.device.type == "cuda"
    # the same shifts, crops and bands: the masked bins agree exactly, the rest to float rounding
    assert torch.equal(cpu == 0, gpu.cpu() == 0)
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)
