"""The peer: the chapter's pipeline as a Python user writes it today, computed on the fly per item.

A `torch.utils.data.Dataset` over the Speech Commands tree whose `__getitem__` decodes one file with
soundfile (torchaudio 2.11's loader needs torchcodec), downmixes, resamples with torchaudio where the
rate is not 16 kHz, pads / truncates to 16,000 samples and applies the torchaudio transform of the
variant; a `DataLoader` with batch 128 and shuffle. Every process runs `torch.set_num_threads(1)`:
per-item STFTs on the 2 intra-op threads run tens of times slower here, which would be an unfair peer.
"""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio

from speechcls.audio.features import make_transform
from speechcls.config import FeatureParams
from speechcls.data.tree import index_tree


class PeerDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, params: FeatureParams, indices=None):
        self.root = Path(root)
        self.index = index_tree(root)
        self.params = params
        self.items = [self.index.clips[i] for i in (indices if indices is not None else range(len(self.index.clips)))]
        self.transform = None if params.variant == "waveform" else make_transform(params)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        clip = self.items[i]
        audio, rate = sf.read(self.root / clip.path, dtype="float32", always_2d=True)
        x = torch.from_numpy(audio).mean(dim=1)  # downmix
        if rate != self.params.sample_rate:
            x = torchaudio.functional.resample(x, rate, self.params.sample_rate)
        x = F.pad(x, (0, max(0, self.params.clip_samples - x.shape[0])))[: self.params.clip_samples].unsqueeze(0)
        if self.transform is not None:
            x = self.transform(x)  # (1, F, T), complex for the complex variant
            if x.is_complex():
                x = torch.view_as_real(x.squeeze(0)).permute(2, 0, 1)  # (2, F, T), as the chapter's permute
        return x, clip.label


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


class PeerLoader:
    """The DataLoader, iterated with 1 torch thread in this process too (it does all the work when
    num_workers == 0); the thread count is given back after each epoch, so what runs next in the same
    benchmark process (our way) gets the machine's default."""

    def __init__(self, loader: torch.utils.data.DataLoader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield from self.loader
        finally:
            torch.set_num_threads(threads)


def peer_loader(
    root: Path,
    params: FeatureParams,
    batch_size: int = 128,
    num_workers: int = 0,
    shuffle: bool = True,
    indices=None,
    seed: int = 0,
) -> PeerLoader:
    ds = PeerDataset(root, params, indices)
    g = torch.Generator().manual_seed(seed)
    return PeerLoader(torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, worker_init_fn=_one_thread,
        generator=g, persistent_workers=False,
    ))  # fmt: skip


def main() -> None:
    """One epoch of the peer over a tree, as a user's script runs it: `python benchmarks/peer.py --root TREE
    --variant complex --workers 2` (benchmarks/featurize.py times this process from start to exit)."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--variant", default="spectrogram")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    clips = 0
    for _x, y in peer_loader(args.root, FeatureParams(args.variant), num_workers=args.workers):
        clips += len(y)
    print(f"peer epoch: {clips} clips")


if __name__ == "__main__":
    main()
