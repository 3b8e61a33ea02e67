"""Train a model of your own on a speechcls feature store, in plain PyTorch.

    speechcls featurize --root data/synth_commands --variant mel --n-mels 40 --out cache/mel40.zarr
    python docs/examples/plain_pytorch.py cache/mel40.zarr --epochs 10

speechcls serves the batches: FeatureLoader reads a split of the store once (or streams it, when it is
larger than memory) and yields (x, y) on the device, in a new order each epoch. The model, the optimizer
and the loop are yours; nothing of speechcls's trainer or model registry is used.
"""

import argparse

import torch
from torch import nn

from speechcls.loader import FeatureLoader


def conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU())


class TinyCNN(nn.Module):
    """Two convolutions on log-power features, averaged over time, and a linear layer. The average is over
    time only: where a sound lies in frequency tells words apart, when it starts does not."""

    def __init__(self, in_shape: tuple[int, int, int], n_classes: int):
        super().__init__()
        channels, freq, _frames = in_shape
        self.body = nn.Sequential(conv(channels, 16), nn.MaxPool2d(2), conv(16, 32))  # (B, 32, F // 2, T // 2)
        self.head = nn.Linear(32 * (freq // 2), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, F, T) power
        x = torch.log(x + 1e-6)  # the store holds power; the log is this model's choice
        x = self.body(x).mean(dim=3)  # (B, 32, F // 2)
        return self.head(x.flatten(1))  # (B, n_classes)


@torch.no_grad()
def accuracy(model: nn.Module, loader: FeatureLoader) -> float:
    model.eval()
    correct = seen = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        seen += len(y)
    return correct / seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", help="a spectrogram or mel store made by `speechcls featurize`")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--split-kind", default="official", help="official (the tree's lists) | random")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)

    common = dict(batch_size=args.batch_size, device=args.device, split_kind=args.split_kind)
    train = FeatureLoader(args.store, "train", **common)  # shuffled: a new order per set_epoch
    valid = FeatureLoader(args.store, "validation", **common)
    shape = " x ".join(map(str, train.item_shape))  # (C, F, T)
    print(f"{args.store}: {train.n} train, {valid.n} validation examples of {shape}, {len(train.classes)} classes")

    model = TinyCNN(train.item_shape, len(train.classes)).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    for epoch in range(args.epochs):
        train.set_epoch(epoch)
        model.train()
        total, seen = torch.zeros((), device=args.device), 0
        for x, y in train:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(y)  # summed on the device: no CPU-GPU sync per step
            seen += len(y)
        acc = accuracy(model, valid)
        print(f"epoch {epoch + 1}: train loss {float(total) / seen:.4f}, validation accuracy {acc:.3f}")
    print(f"validation accuracy {acc:.3f} (chance {1 / len(train.classes):.3f})")


if __name__ == "__main__":
    main()
