"""Which weights are kept (issue 27): every run tests every selection rule (best validation accuracy, best
validation loss, the final weights, the EMA, the average of the last epochs); --best-by swa keeps the
average with its BatchNorm statistics recomputed; the summary prints the kept and the final weights' test
accuracy; a resumed run with both averages ends as an uninterrupted one."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from speechcls.cli import app
from speechcls.config import TrainConfig
from speechcls.engine import checkpoint
from speechcls.engine.fit import RULES, fit
from speechcls.engine.setup import eval_loader
from speechcls.models import build_model

from helpers import InterruptAfter


@pytest.fixture(scope="module")
def tiny_store(small_store):
    """10 words of the real clips: 74 train, 12 validation, 14 test (conftest's shared store)."""
    return small_store()


def cfg_for(store, **kw) -> TrainConfig:
    # BC-ResNet-1: BatchNorm throughout and fast on the CPU; no early stopping (ema and swa need the whole run)
    given = dict(store=str(store), device="cpu", model="bcresnet-1", batch_size=32, early_stopping=False)
    return TrainConfig(**(given | kw))


def test_every_rule_is_tested_and_swa_keeps_the_average_with_recomputed_batchnorm(tiny_store, tmp_path, monkeypatch):
    # batch 128 > the 74 training clips: one batch per epoch, so the BatchNorm statistics of the whole
    # split can be taken by torch's own BatchNorm in one forward below (momentum 1: that batch's statistics)
    cfg = cfg_for(tiny_store, epochs=4, best_by="swa", swa_epochs=2, batch_size=128)
    saved, per_epoch = checkpoint.save, {}

    def record(path, state):  # last.pt's model after every epoch: the weights the average should take
        if str(path).endswith("last.pt"):
            per_epoch[state["epoch"]] = {k: v.clone() for k, v in state["model"].items()}
        return saved(path, state)

    monkeypatch.setattr(checkpoint, "save", record)  # fit calls checkpoint.save
    m = fit(cfg, tmp_path / "run")
    assert list(m["test_acc_by"]) == list(RULES) and list(m["valid_acc_by"]) == list(RULES)
    assert all(0 <= v <= 1 for v in [*m["test_acc_by"].values(), *m["valid_acc_by"].values()])
    assert m["kept_by"] == "swa" and m["test_acc"] == m["test_acc_by"]["swa"] and m["swa_epochs"] == 2
    assert m["epoch_by"]["last"] == 4 and 1 <= m["epoch_by"]["acc"] <= 4 and 1 <= m["epoch_by"]["loss"] <= 4

    best = checkpoint.load(tmp_path / "run" / "best.pt")
    assert best["kept_by"] == "swa"
    # the parameters: the float64 mean of epochs 3 and 4's weights
    ref = build_model("bcresnet-1", tuple(best["in_shape"]), len(best["classes"]))
    params = dict(ref.named_parameters())
    for name in params:
        mean = (per_epoch[3][name].double() + per_epoch[4][name].double()) / 2
        torch.testing.assert_close(best["model"][name].double(), mean, rtol=0, atol=1e-6, msg=name)
    # the BatchNorm statistics: torch's BatchNorm over the whole training split, no augmentation (the
    # checkpoint's plain input pipeline), dropout off
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(best["model"][name])
        x = torch.cat([xb for xb, _ in eval_loader(best, "train", torch.device("cpu"))])
        assert len(x) == 74
        ref.eval()
        bns = [mod for mod in ref.modules() if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
        for bn in bns:
            bn.train()
            bn.momentum = 1.0
        ref(x)
    for name, buf in ref.named_buffers():
        if name.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(best["model"][name], buf, rtol=1e-4, atol=1e-5, msg=name)
            # and not the model's own (training, augmented) statistics: they were recomputed
            assert not torch.allclose(best["model"][name], per_epoch[4][name], rtol=1e-3, atol=1e-4), name


def test_the_summary_shows_the_kept_and_the_final_weights_accuracy(tiny_store, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--store", str(tiny_store), "--model", "bcresnet-1", "--batch-size", "32", "--device", "cpu"]
    args += ["--epochs", "2", "--no-early-stopping", "--best-by", "acc", "--out", str(run)]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    m = json.loads((run / "metrics.json").read_text())
    summary = next(line for line in r.output.splitlines() if line.startswith("summary: "))
    assert f"acc {m['test_acc']:.4f} (chance 0.1000, 10 classes) of the kept weights (best validation accuracy)" in (
        summary
    )
    assert f"final weights acc {m['test_acc_by']['last']:.4f}" in summary
    assert summary in (run / "train.log").read_text()


def test_resume_with_both_averages_equals_an_uninterrupted_run(tiny_store, tmp_path):
    cfg = cfg_for(tiny_store, epochs=3, best_by="ema", swa_epochs=2)
    whole = fit(cfg, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "cut", progress=InterruptAfter(ends=2))  # the SWA average holds one epoch already
    resumed = fit(cfg, tmp_path / "cut", resume=True)
    assert resumed["test_loss"] == pytest.approx(whole["test_loss"], abs=1e-6)
    for rule in RULES:
        assert resumed["test_acc_by"][rule] == pytest.approx(whole["test_acc_by"][rule], abs=1e-6), rule
        assert resumed["valid_acc_by"][rule] == pytest.approx(whole["valid_acc_by"][rule], abs=1e-6), rule
    a, b = (checkpoint.load(tmp_path / n / "last.pt") for n in ("whole", "cut"))
    for key in ("ema", "swa"):
        for k, v in a[key].items():
            torch.testing.assert_close(b[key][k], v, rtol=0, atol=1e-6, msg=f"{key} {k}")
    for rule in ("acc", "loss"):
        for k, v in a["selection"][rule]["model"].items():
            torch.testing.assert_close(b["selection"][rule]["model"][k], v, rtol=0, atol=1e-6, msg=f"{rule} {k}")
    # --best-by ema: best.pt holds the moving average's weights (last.pt's "ema", without its "module." prefix)
    best = checkpoint.load(tmp_path / "cut" / "best.pt")
    assert best["kept_by"] == "ema" and resumed["test_acc"] == resumed["test_acc_by"]["ema"]
    for k, v in best["model"].items():
        torch.testing.assert_close(v, b["ema"][f"module.{k}"], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("rule", ["ema", "swa"])
def test_an_average_with_early_stopping_or_a_window_longer_than_the_run_is_refused(rule):
    with pytest.raises(ValueError, match=f"--best-by {rule} keeps .*add --no-early-stopping"):
        TrainConfig(best_by=rule).validate()
    with pytest.raises(ValueError, match="--swa-epochs must be in"):
        TrainConfig(epochs=5, swa_epochs=6, early_stopping=False).validate()
    assert TrainConfig(best_by=rule, early_stopping=False).validate().best_by == rule


@pytest.mark.parametrize("n_mels", [40, 42])  # 42: SubSpectralNorm's bands of uneven width (no module call)
def test_recomputed_batchnorm_statistics_are_the_whole_sets_for_every_norm_layer(n_mels):
    """bn_statistics over batches equals torch's BatchNorm over the whole set in one forward (momentum 1),
    also for BC-ResNet's SubSpectralNorm where F.batch_norm runs on slices of its BatchNorm2d's buffers."""
    from speechcls.engine.selection import bn_statistics
    from speechcls.models.bcresnet import SubSpectralNorm

    torch.manual_seed(0)
    model = build_model("bcresnet-1", (1, n_mels, 101), 5)
    x = torch.randn(24, 1, n_mels, 101)
    # one batch: in training mode each layer normalizes by its batch, so what the next layers see depends on
    # the batching (as in torch's update_bn); one batch of the whole set makes the reference exact
    bn_statistics(model, [lambda m: m(x)])
    got = {k: v.clone() for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    ref = build_model("bcresnet-1", (1, n_mels, 101), 5)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    for m in ref.modules():
        if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, SubSpectralNorm)):
            m.train()
            m.momentum = 1.0
    with torch.no_grad():
        ref(x)
    want = {k: v for k, v in ref.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    assert got.keys() == want.keys() and len(got) > 10
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-5, msg=k)
    init = build_model("bcresnet-1", (1, n_mels, 101), 5).state_dict()
    assert sum(not torch.allclose(got[k], init[k]) for k in got) > len(got) // 2  # recomputed, not the initial ones
