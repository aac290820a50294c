"""Damaged saved models: ``FinVAE.load`` raises DataError naming the file and the fault, never a bare error."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from finvae import DataError, FinVAE


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    rng = np.random.default_rng(0)
    index = pd.bdate_range("2020-01-01", periods=120, name="Date")
    returns = pd.DataFrame(rng.normal(0, 0.01, (120, 4)), index=index, columns=["A", "B", "C", "D"])
    model = FinVAE(window=5, latent_dim=2, hidden=8, epochs=1, random_state=0, verbose=0).fit(returns)
    return model.save(tmp_path_factory.mktemp("saved") / "model"), model


@pytest.fixture
def folder(saved, tmp_path):
    """A fresh copy of the saved model, free to damage."""
    source, _ = saved
    copy = tmp_path / "model"
    copy.mkdir()
    for path in source.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    return copy


def _edit_json(folder, edit) -> None:
    state = json.loads((folder / "finvae.json").read_text())
    edit(state)
    (folder / "finvae.json").write_text(json.dumps(state))


def _edit_tensors(folder, edit) -> None:
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors")


def _load_fails(folder, *fragments: str) -> str:
    with pytest.raises(DataError) as info:
        FinVAE.load(folder)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_loading_leaves_torch_s_random_state_alone(folder):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    FinVAE.load(folder)
    assert torch.equal(torch.rand(3), expected)  # a seeded notebook draws the same numbers after a load


def test_an_intact_copy_loads(folder, saved):
    _, model = saved
    loaded = FinVAE.load(folder)
    assert loaded.threshold_ == model.threshold_ and loaded.vol_halflife == model.vol_halflife
    np.testing.assert_array_equal(loaded.mean_, model.mean_)


def test_truncated_json(folder):
    text = (folder / "finvae.json").read_text()
    (folder / "finvae.json").write_text(text[: len(text) // 2])
    _load_fails(folder, "finvae.json", "not valid JSON", "truncated")


def test_json_edited_into_invalid_syntax(folder):
    text = (folder / "finvae.json").read_text()
    (folder / "finvae.json").write_text(text.replace('"threshold_":', '"threshold_" ', 1))
    message = _load_fails(folder, "finvae.json", "not valid JSON", "(line ")
    assert "truncated" not in message


def test_json_that_is_not_an_object(folder):
    (folder / "finvae.json").write_text("[1, 2, 3]")
    _load_fails(folder, "finvae.json", "JSON list")


def test_json_missing_an_entry(folder):
    _edit_json(folder, lambda state: state.pop("threshold_"))
    _load_fails(folder, "finvae.json", "'threshold_'")


@pytest.mark.parametrize(("key", "value", "fault"), [
    ("n_features_in_", "four", "'n_features_in_' must be an integer"),
    ("feature_names_in_", ["A", "B"], "'feature_names_in_' must be null or a list of 4"),
    ("threshold_", None, "'threshold_' must be a finite number"),
    ("asset_calibration_", [], "'asset_calibration_' must be a list of 4"),
])
def test_json_with_an_edited_value(folder, key, value, fault):
    _edit_json(folder, lambda state: state.update({key: value}))
    _load_fails(folder, "finvae.json", fault)


def test_json_with_edited_parameters(folder):
    _edit_json(folder, lambda state: state["params"].update(window=-3))
    _load_fails(folder, "finvae.json", "not valid FinVAE parameters", "window")
    _edit_json(folder, lambda state: state["params"].update(window=5, colour="red"))
    _load_fails(folder, "finvae.json", "unknown parameter(s) 'colour'")


def test_missing_json_is_not_a_model_folder(folder):
    (folder / "finvae.json").unlink()
    _load_fails(folder, str(folder), "not a finvae model folder", "no finvae.json", "model.safetensors")


def test_missing_safetensors_file(folder):
    (folder / "model.safetensors").unlink()
    _load_fails(folder, "model.safetensors", "is missing")


def test_truncated_safetensors_file(folder):
    raw = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    _load_fails(folder, "model.safetensors", "not a valid safetensors file")


def test_missing_tensor(folder):
    _edit_tensors(folder, lambda tensors: tensors.pop("scale_"))
    _load_fails(folder, "model.safetensors", "lacks the tensor 'scale_'")


def test_missing_network_tensor(folder):
    name = next(key for key in load_file(folder / "model.safetensors") if key.startswith("model."))
    _edit_tensors(folder, lambda tensors: tensors.pop(name))
    _load_fails(folder, "model.safetensors", f"lacks the tensor(s) '{name}'")


def test_mis_shaped_tensors(folder):
    _edit_tensors(folder, lambda tensors: tensors.update(mean_=torch.zeros(3, dtype=torch.float64)))
    _load_fails(folder, "model.safetensors", "'mean_' has shape (3,)", "needs (4,)")


def test_mis_shaped_network_tensor(folder):
    tensors = load_file(folder / "model.safetensors")
    name = next(key for key, value in tensors.items() if key.startswith("model.") and value.ndim == 2)
    _edit_tensors(folder, lambda tensors: tensors.update({name: torch.zeros(1, 1)}))
    _load_fails(folder, "model.safetensors", f"'{name}' has shape (1, 1)")


def test_unexpected_or_non_finite_tensor(folder):
    _edit_tensors(folder, lambda tensors: tensors.update({"model.extra": torch.zeros(2)}))
    _load_fails(folder, "model.safetensors", "does not have: 'model.extra'")
    _edit_tensors(folder, lambda tensors: (tensors.pop("model.extra"), tensors["scale_"].fill_(float("nan"))))
    _load_fails(folder, "model.safetensors", "'scale_' holds NaN")
    _edit_tensors(folder, lambda tensors: tensors["scale_"].fill_(0.0))  # every score would be NaN
    _load_fails(folder, "model.safetensors", "'scale_' must hold each asset's positive training volatility")


@pytest.mark.parametrize(("version", "advice"), [("99", "upgrade finvae")])
def test_another_format_version_says_which_way_to_go(folder, version, advice):
    _edit_json(folder, lambda state: state.update(format=f"finvae.FinVAE/{version}"))
    _load_fails(folder, f"saved in format {version}", advice)


def test_folders_that_are_not_models(tmp_path):
    _load_fails(tmp_path / "nowhere", "nowhere", "no such model folder")
    (tmp_path / "prices.csv").write_text("Date,A\n")
    _load_fails(tmp_path / "prices.csv", "prices.csv", "is a file, not a model folder")
    (tmp_path / "empty").mkdir()
    _load_fails(tmp_path / "empty", "not a finvae model folder", "it is empty")
    _load_fails(tmp_path, "not a finvae model folder", "it holds", "prices.csv")


def test_files_from_two_different_saves(folder, tmp_path):
    """The JSON names its tensors file's hash: tensors from another fit of the same shapes do not load as one model."""
    rng = np.random.default_rng(1)
    returns = pd.DataFrame(rng.normal(0, 0.01, (120, 4)), index=pd.bdate_range("2020-01-01", periods=120),
                           columns=["A", "B", "C", "D"])
    other = FinVAE(window=5, latent_dim=2, hidden=8, epochs=1, random_state=1, verbose=0).fit(returns)
    (folder / "model.safetensors").write_bytes((other.save(tmp_path / "other") / "model.safetensors").read_bytes())
    _load_fails(folder, "come from different saves")


@pytest.mark.parametrize(("edit", "fault"), [
    (lambda state: state.update(calibration_={}), "'calibration_.kl' must be an object with a rising 'grid'"),
    (lambda state: state.update(asset_calibration_=[{}] * 4), "'asset_calibration_[0]'"),
    (lambda state: state["calibration_"]["residual"].update(rate=-1.0), "'calibration_.residual'"),
    (lambda state: state["history_"]["epoch"].pop(), "'history_' is not a table of equal-length columns"),
    (lambda state: state.update(asset_names_=["A", "B"]), "'asset_names_' must be null or a list of 4"),
    (lambda state: state.update(history_attrs=[1, 2]), "'history_attrs' must be a mapping"),
])
def test_json_with_edited_calibration_or_history(folder, edit, fault):
    _edit_json(folder, edit)
    _load_fails(folder, "finvae.json", fault)


@pytest.mark.parametrize(("edit", "fault"), [
    (lambda tensors: tensors["dynamics.codes"].fill_(float("nan")), "dynamics.codes holds NaN"),
    (lambda tensors: tensors.update({"dynamics.codes": tensors["dynamics.codes"][:, :1].contiguous()}),
     "dynamics.codes has shape"),
    (lambda tensors: tensors.update({"dynamics.variances": tensors["dynamics.variances"][:1].contiguous()}),
     "volatility legs"),
])
def test_damaged_simulation_dynamics(folder, edit, fault):
    _edit_tensors(folder, edit)
    _load_fails(folder, "model.safetensors", "simulation dynamics are damaged", fault)
