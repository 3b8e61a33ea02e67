"""The sliding-frames way of scoring a long recording: its STFT frames computed once, the model slid over them.

The per-window way (listen.posteriors with way="windows") hands every window, `clip_samples` long, to
the model's front end: at a 100 ms hop each sample is transformed ten times. Here the frames come from
the recording itself, and each window's features are the frames it covers, gathered.

Why the two give the same posteriors (to float tolerance, tests/test_stream.py holds them): featurize's
STFT centres its frames (torch.stft center=True, reflect padding of n_fft // 2 at both ends of the
window), so a window's frame t covers the window's samples [t h - n/2, t h + n/2) (h = hop_length, n =
n_fft). Where that span lies inside the window (the *interior* frames) it is the recording's samples
[s + t h - n/2, s + t h + n/2) for a window starting at s: one STFT of the recording with center=False,
after n/2 zeros in front, holds every one of them, frame s / h + t, as long as every window start s is a
multiple of h (a 100 ms hop of 1,600 samples is 10 frames of 160). The *edge* frames, the first
ceil(n/2 / h) and the last few whose span reaches past the window, read the window's own reflect padding
and differ from the recording's frames: they are computed per window, by the same transform on the
window's first and last samples alone (a segment whose reflect padding is the window's), 4 frames of the
chapter's 101. So nothing is approximated: every frame is the transform the per-window way computes,
on the same samples, and the input transform (log, standardization, per-window mean over time) and the
model then see the same (C, F, T) features.

Where the hop is no multiple of hop_length, or a window is too short to have interior frames, the
sliding way does not apply and `can_slide` says why; listen then uses the per-window way.
"""

from __future__ import annotations

import copy
import math

import numpy as np

# windows whose frames are computed in one STFT: bounded memory, one window's frames recomputed per block (~2 %)
BLOCK_WINDOWS = 512


def edge_frames(n_fft: int, hop_length: int, clip_samples: int) -> tuple[int, int, int]:
    """(left, right, frames): how many of a window's `frames` (1 + clip // hop_length) are edge frames at
    each end, reading the window's reflect padding rather than samples the recording holds there."""
    half, frames = n_fft // 2, 1 + clip_samples // hop_length
    left = math.ceil(half / hop_length)  # t h < n/2
    right = sum(1 for t in range(frames) if t * hop_length + half > clip_samples)  # t h + n/2 > clip
    return left, right, frames


def can_slide(params, hop: int) -> str | None:
    """None where the sliding way gives the per-window features exactly for windows every `hop` samples;
    else why not (a sentence)."""
    if params.variant == "waveform":
        return "the model reads the waveform itself"
    if hop % params.hop_length:
        return f"the hop of {hop} samples is no multiple of the features' hop_length {params.hop_length}"
    left, right, frames = edge_frames(params.n_fft, params.hop_length, params.clip_samples)
    if left + right >= frames:
        return f"a window of {params.clip_samples} samples has no frame that lies inside it (n_fft {params.n_fft})"
    return None


def _uncentered(extractor):
    """A copy of featurize's FeatureExtractor whose STFT does not centre its frames (center=False): the
    recording's frames, frame j over samples [j h, j h + n_fft) of what it is given."""
    out = copy.deepcopy(extractor)
    spec = out.transform.spectrogram if hasattr(out.transform, "spectrogram") else out.transform
    spec.center = False
    return out


class FrameSlider:
    """The windows' features from the recording's frames: `features(padded, starts)` gives, for windows
    starting at `starts` (samples, multiples of hop_length) in the zero-padded recording, the (B, C, F, T)
    features featurize's FeatureExtractor gives each window on its own (the module docstring says why they
    are equal). `extractor` is that FeatureExtractor, on the device the features are wanted on."""

    def __init__(self, extractor, params):
        self.extractor = extractor.eval()
        self.long = _uncentered(extractor).eval()
        self.params = params
        h, n, clip = params.hop_length, params.n_fft, params.clip_samples
        self.left, self.right, self.frames = edge_frames(n, h, clip)
        # the left edge frames from the window's first samples: the last one reaches sample (left - 1) h + n/2,
        # and the reflect padding needs more than n/2 (the fewer samples, the less STFT per window)
        self.head = min(clip, (self.left - 1) * h + n // 2 + 1)
        # the right ones from its samples from `tail` on (a multiple of h, so frames stay aligned)
        self.tail = max(0, ((self.frames - self.right) * h - n // 2) // h * h)

    def block(self, padded, first: int, last: int):
        """The recording's frames for windows starting at samples first..last: (C, F, frames) features
        of frame index j covering padded[first + j h - n/2, first + j h + n/2)."""
        import torch

        half, clip = self.params.n_fft // 2, self.params.clip_samples
        piece = padded[first : last + clip]  # (S,)
        piece = torch.nn.functional.pad(piece, (half, half))  # zeros: frames beyond the window ends are not used
        with torch.no_grad():
            return self.long(piece[None])[0]  # (C, F, 1 + S // h)

    def features(self, padded, starts: np.ndarray, frames=None, first: int | None = None):
        """(B, C, F, T) features of the windows padded[s : s + clip] for s in `starts`; `frames` (from
        `block`, whose windows start at `first`) where already computed."""
        import torch

        h, clip = self.params.hop_length, self.params.clip_samples
        first = int(starts[0]) if first is None else first
        if frames is None:
            frames = self.block(padded, first, int(starts[-1]))
        index = torch.as_tensor((np.asarray(starts) - first) // h, device=frames.device)
        inner = index[:, None] + torch.arange(self.left, self.frames - self.right, device=frames.device)[None]
        middle = frames[:, :, inner].permute(2, 0, 1, 3)  # (C, F, B, T_inner) -> (B, C, F, T_inner)
        at = torch.as_tensor(np.asarray(starts), device=padded.device)
        with torch.no_grad():
            heads = padded[at[:, None] + torch.arange(self.head, device=padded.device)]  # (B, head)
            tails = padded[at[:, None] + torch.arange(self.tail, clip, device=padded.device)]  # (B, clip - tail)
            left = self.extractor(heads)[..., : self.left]
            right = self.extractor(tails)[..., -self.right :] if self.right else middle[..., :0]
        return torch.cat([left, middle, right], dim=-1)
