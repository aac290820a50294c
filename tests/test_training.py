"""The shared trainer on a tiny dense VAE: history, seeding, early stopping, errors, silence."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

import finvae.training as training
from finvae import TrainingError
from finvae.nn import VAE, bernoulli_nll
from finvae.training import TensorBatches, TrainingConfig, seeded, train_vae

HISTORY_COLUMNS = [
    "train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "beta", "lr", "seconds",
]  # fmt: skip


class _Encoder(nn.Module):
    def __init__(self, n: int, latent: int) -> None:
        super().__init__()
        self.net = nn.Linear(n, 2 * latent)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.net(x).chunk(2, dim=-1)


class TinyVAE(VAE):
    def __init__(self, n: int = 8, latent: int = 2) -> None:
        super().__init__()
        self.encoder = _Encoder(n, latent)
        self.decoder = nn.Linear(latent, n)

    def reconstruction_nll(self, decoded: Tensor, x: Tensor, *extra: Tensor) -> Tensor:
        return bernoulli_nll(decoded, x)


def _data(n: int = 96) -> TensorBatches:
    return TensorBatches(torch.rand(n, 8, generator=torch.Generator().manual_seed(0)))


def _fit(seed: int = 0, **config) -> tuple[TinyVAE, object]:
    with seeded(seed):
        model = TinyVAE()
    settings = dict(epochs=4, batch_size=16, seed=seed, verbose=0) | config
    return model, train_vae(model, _data(), TrainingConfig(**settings))


def test_seeded_runs_repeat_exactly():
    model_a, hist_a = _fit(seed=3)
    model_b, hist_b = _fit(seed=3)
    cols = [c for c in HISTORY_COLUMNS if c != "seconds"]
    assert hist_a[cols].equals(hist_b[cols])
    for a, b in zip(model_a.state_dict().values(), model_b.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    _, hist_c = _fit(seed=4)
    assert not hist_a["train_loss"].equals(hist_c["train_loss"])


def test_history_has_one_row_per_epoch_and_the_documented_columns():
    _, hist = _fit(epochs=5, patience=None, kl_warmup=2, lr_schedule="onecycle")
    assert list(hist.columns) == HISTORY_COLUMNS
    assert list(hist.index) == [1, 2, 3, 4, 5] and hist.index.name == "epoch"
    assert hist["beta"].tolist() == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert hist[["train_loss", "val_loss"]].notna().all().all()
    assert hist.attrs["best_epoch"] == 5
    _, no_val = _fit(validation_fraction=0.0)
    assert no_val["val_loss"].isna().all() and len(no_val) == 4


def test_early_stopping_stops_and_restores_the_best_weights(monkeypatch):
    # Script the validation losses so the best epoch is known: 3, then 2 worse epochs.
    val_losses = iter([5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8])
    snapshots = []

    def fake_evaluate(model, *args, **kwargs):
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(val_losses), 0.0

    monkeypatch.setattr(training, "evaluate_elbo", fake_evaluate)
    model, hist = _fit(epochs=7, patience=2)
    assert len(hist) == 5 and hist.attrs["best_epoch"] == 3
    for name, value in model.state_dict().items():
        assert torch.equal(value, snapshots[2][name])
    assert not torch.equal(model.state_dict()["decoder.weight"], snapshots[4]["decoder.weight"])


def test_nan_loss_raises_a_training_error_that_says_what_to_try():
    with seeded(0):
        model = TinyVAE()
    x = torch.rand(32, 8)
    x[5, 3] = float("nan")
    with pytest.raises(TrainingError, match="NaN or infinite.*learning rate"):
        train_vae(model, TensorBatches(x), TrainingConfig(epochs=2, batch_size=8, seed=0, verbose=0))


def test_verbose_zero_prints_nothing(capfd):
    _fit(verbose=0)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_training_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    _fit(seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_bfloat16_mixed_precision_trains_float32_weights_close_to_float32_training():
    model_32, hist_32 = _fit(seed=5, precision="float32")
    model_16, hist_16 = _fit(seed=5, precision="bfloat16")
    assert all(p.dtype == torch.float32 for p in model_16.parameters())
    assert hist_16["train_loss"].notna().all()
    # Same seed, coarser arithmetic: the same run to within bfloat16's ~3 significant digits.
    assert hist_16["train_loss"].to_numpy() == pytest.approx(hist_32["train_loss"].to_numpy(), rel=0.02)
    assert not hist_16["train_loss"].equals(hist_32["train_loss"])


def test_precision_auto_and_bad_values():
    cpu = torch.device("cpu")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert training.resolve_precision("auto", cpu) == (torch.bfloat16 if native else torch.float32)
    assert training.resolve_precision("float32", cpu) == torch.float32
    with pytest.raises(ValueError, match="precision must be"):
        _fit(precision="half")


@pytest.mark.parametrize("schedule", ["constant", "onecycle"])
def test_adam_takes_the_steps_of_clip_grad_norm_and_torch_optim_adam(schedule):
    # finvae's Adam exists to skip torch.optim's import of torch._dynamo and to update one flat
    # buffer: its steps, clipping included, must be torch's.
    with seeded(0):
        ours, theirs = TinyVAE(), TinyVAE()
    theirs.load_state_dict(ours.state_dict())
    x = _data().tensors[0]
    max_norm = 0.2  # small enough to clip most steps
    optimizer = training.Adam(ours.parameters(), lr=1e-2, weight_decay=1e-3, max_grad_norm=max_norm)
    reference = torch.optim.Adam(theirs.parameters(), lr=1e-2, weight_decay=1e-3)
    n_steps = 12
    scheduler = (
        torch.optim.lr_scheduler.OneCycleLR(reference, max_lr=1e-2, total_steps=n_steps)
        if schedule == "onecycle" else None
    )
    clipped = 0
    for step in range(n_steps):
        if scheduler is not None:
            optimizer.lr, beta1 = training.one_cycle(step, n_steps, 1e-2)
            optimizer.betas = (beta1, optimizer.betas[1])
            assert optimizer.lr == pytest.approx(reference.param_groups[0]["lr"])
            assert beta1 == pytest.approx(reference.param_groups[0]["betas"][0])
        for model, opt in ((ours, optimizer), (theirs, reference)):
            opt.zero_grad()
            bernoulli_nll(model.decoder(model.encoder(x)[0]), x).mean().backward()
            if opt is reference:
                clipped += float(nn.utils.clip_grad_norm_(model.parameters(), max_norm)) > max_norm
            opt.step()
        if scheduler is not None:
            scheduler.step()
    assert clipped > n_steps // 2
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_adam_keeps_each_parameter_a_view_of_its_flat_buffer():
    with seeded(0):
        model = TinyVAE()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = training.Adam(model.parameters(), lr=0.1)
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])
    model.decoder.weight.grad = torch.ones_like(model.decoder.weight)
    model.encoder.net.weight.grad = torch.ones_like(model.encoder.net.weight)
    model.decoder.bias.grad = model.encoder.net.bias.grad = None
    optimizer.step()  # some parameters without a gradient: updated one by one, in the flat buffer
    assert not torch.equal(model.decoder.weight.detach(), before["decoder.weight"])
    assert torch.equal(model.decoder.bias.detach(), before["decoder.bias"])
    model.load_state_dict(before)  # in place: still views of the buffer
    assert torch.equal(optimizer.flat[: model.encoder.net.weight.numel()], before["encoder.net.weight"].reshape(-1))


def test_adam_refuses_to_step_parameters_that_left_its_buffer():
    with seeded(0):
        model = TinyVAE()
    optimizer = training.Adam(model.parameters(), lr=0.1)
    model.decoder.weight.data = model.decoder.weight.data.clone()  # what model.to(other_device) does
    model.encoder.net.weight.data = model.encoder.net.weight.data.clone()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="Create the optimiser after moving the model"):
        optimizer.step()


def test_adam_leaves_parameters_without_a_gradient_alone():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    optimizer = training.Adam([a, b], lr=0.1, max_grad_norm=1.0)
    (a**2).sum().backward()
    optimizer.step()
    assert torch.all(a < 1) and torch.equal(b.detach(), torch.ones(2)) and optimizer.steps == [1, 0]
    (a.sum() + b.sum()).backward()
    optimizer.step()  # step counts differ now: each parameter gets its own bias correction
    assert torch.all(b < 1) and optimizer.steps == [2, 1]


def test_training_does_not_import_torch_compile_machinery():
    # torch.optim's first optimiser imports torch._dynamo (about a second); a fit should not pay that.
    code = (
        "import sys, torch\n"
        "from finvae.training import TrainingConfig, TensorBatches, train_vae\n"
        "from tests.test_training import TinyVAE, _data\n"
        "train_vae(TinyVAE(), _data(), TrainingConfig(epochs=2, batch_size=16, verbose=0, lr_schedule='onecycle'))\n"
        "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n"
    )
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize(("setting", "message"), [
    (dict(epochs=0), "epochs must be an integer ≥ 1"),
    (dict(batch_size=-16), "batch_size must be an integer ≥ 1"),
    (dict(kl_warmup=-2), "kl_warmup must be an integer ≥ 0"),
    (dict(lr=0.0), "lr must be a finite number > 0"),
    (dict(beta=-1.0), "beta must be a finite number ≥ 0"),
    (dict(max_grad_norm=-1.0), "max_grad_norm must be a finite number > 0"),
    (dict(validation_fraction=float("nan")), "validation_fraction must be a finite number ≥ 0 and < 1"),
    (dict(patience=0), "patience must be an integer ≥ 1"),
    (dict(seed=1.5), "seed must be an integer ≥ 0"),
    (dict(seed="0"), "seed must be an integer ≥ 0"),
])
def test_config_names_the_setting_out_of_range(setting, message):
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**setting)


def test_empty_data_say_so():
    with pytest.raises(ValueError, match="no examples to train on"):
        train_vae(TinyVAE(), TensorBatches(torch.zeros(0, 8)), TrainingConfig(epochs=1, verbose=0))


def test_numpy_seeds_numpy_data_and_what_train_vae_cannot_take():
    import numpy as np

    model, history = _fit(seed=3)
    with seeded(3):
        again = TinyVAE()
    data = TensorBatches(_data().tensors[0].numpy())  # an array is taken as the tensor it holds
    repeat = train_vae(again, data, TrainingConfig(epochs=4, batch_size=16, seed=np.int64(3), verbose=0))
    assert repeat["train_loss"].equals(history["train_loss"])
    for bad in (_data().tensors[0], torch.utils.data.DataLoader(_data().tensors[0])):
        with pytest.raises(TypeError, match=r"train_vae takes batches .* TensorBatches\(x\)"):
            train_vae(TinyVAE(), bad, TrainingConfig(epochs=1, verbose=0))


def test_a_trained_model_has_one_storage_per_parameter_and_saves_with_safetensors(tmp_path):
    from safetensors.torch import load_model, save_model

    model, _ = _fit()
    storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert len(storages) == len(list(model.parameters()))  # not views of Adam's flat buffer any more
    save_model(model, tmp_path / "model.safetensors")
    reloaded = TinyVAE()
    load_model(reloaded, tmp_path / "model.safetensors")
    for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_train_vae_names_data_that_give_no_tuple_of_tensors():
    with pytest.raises(TypeError, match=r"must give a tuple of tensors .* gave ndarray"):
        train_vae(TinyVAE(), _data().tensors[0].numpy(), TrainingConfig(epochs=1, verbose=0))


def test_the_meta_device_is_refused_up_front():
    with pytest.raises(ValueError, match="device='meta' holds no data"):
        training.resolve_device("meta")


def test_seeded_fits_in_threads_give_the_numbers_they_give_alone():
    from concurrent.futures import ThreadPoolExecutor

    from finvae import FinVAE

    rng = np.random.default_rng(0)
    returns = pd.DataFrame(rng.standard_t(4, size=(260, 4)) * 0.01, index=pd.bdate_range("2020-01-01", periods=260))
    settings = dict(window=10, hidden=8, epochs=2, verbose=0)
    alone = [FinVAE(random_state=seed, **settings).fit(returns).score(returns) for seed in (0, 1)]
    threads = torch.get_num_threads()
    with ThreadPoolExecutor(2) as pool:  # as joblib's threading backend or a Dask worker with two threads runs them
        together = list(pool.map(lambda seed: FinVAE(random_state=seed, **settings).fit(returns).score(returns),
                                 (0, 1)))
    for one, other in zip(alone, together, strict=True):
        pd.testing.assert_series_equal(one, other)
    assert torch.get_num_threads() == threads  # the caller's setting, restored


def test_the_progress_bar_counts_finished_epochs_and_ends_full_on_early_stopping(capsys):
    from finvae import FinVAE

    rng = np.random.default_rng(0)
    returns = pd.DataFrame(rng.normal(0, 0.01, (1500, 4)), index=pd.bdate_range("2010-01-01", periods=1500))
    model = FinVAE(window=10, hidden=8, epochs=40, patience=2, verbose=1, random_state=0).fit(returns)
    stopped = len(model.history_)
    assert stopped < 40
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{stopped}/{stopped}" in last and "stopped=early" in last  # not 2/40, drawn as a failure


def test_a_fit_in_another_thread_inside_seeded_finishes_and_nested_thread_counts_come_back():
    import threading

    from finvae import FinVAE
    from finvae.training import torch_threads

    rng = np.random.default_rng(0)
    returns = pd.DataFrame(rng.normal(0, 0.01, (260, 4)), index=pd.bdate_range("2020-01-01", periods=260))
    with seeded(0):  # the caller's seeded block waits for a fit in another thread: no lock held here
        worker = threading.Thread(target=lambda: FinVAE(window=10, hidden=8, epochs=1, verbose=0).fit(returns))
        worker.start()
        worker.join(60)
    assert not worker.is_alive()
    before = torch.get_num_threads()
    with torch_threads(3):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 3  # the outer block's count, back
    assert torch.get_num_threads() == before


def test_a_thread_count_torch_refuses_leaves_no_block_open():
    from finvae.training import torch_threads

    before = torch.get_num_threads()
    with pytest.raises(RuntimeError):
        with torch_threads(0):
            pass
    with torch_threads(1):  # every later block still opens and closes
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
