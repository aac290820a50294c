"""FinVAE: outputs aligned to dates, no look-ahead, round trips, seeding, sklearn habits, missing data, causal code."""

from __future__ import annotations

import copy
import json
import pickle
import struct

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, TimeSeriesSplit
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_estimator

import finvae._validation as validation
from finvae import DataError, FinVAE, elbo_scorer
from finvae.estimator import (
    SKLEARN_CHECKS_RULED_OUT,
    SKLEARN_DATA_LOOK_LIKE_PRICES,
)
from finvae.scoring import fit_tail
from finvae.simulation import Dynamics

WINDOW = 5
ASSETS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
FAST = dict(window=WINDOW, hidden=8, epochs=3, random_state=0, verbose=0)
HISTORY_COLUMNS = ["train_loss", "train_recon", "train_kl", "val_loss", "val_recon", "val_kl", "beta", "lr", "seconds"]


def make_returns(n_days: int = 300, assets=ASSETS, seed: int = 0) -> pd.DataFrame:
    """Daily returns with one market factor, business-day dates."""
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, 0.01, size=(n_days, 1))
    values = market * rng.uniform(0.5, 1.5, size=len(assets)) + rng.normal(0.0, 0.006, size=(n_days, len(assets)))
    return pd.DataFrame(values, index=pd.bdate_range("2020-01-01", periods=n_days), columns=list(assets))


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    return make_returns()


@pytest.fixture(scope="module")
def model(returns) -> FinVAE:
    return FinVAE(**FAST).fit(returns.iloc[:220])


def _outputs(model: FinVAE, X) -> dict[str, object]:
    """Every date-aligned output of a fitted model."""
    means, variances = model.encode(X)
    return {
        "transform": model.transform(X),
        "score": model.score(X),
        "score_parts": model.score_parts(X),
        "predict": model.predict(X),
        "reconstruct": model.reconstruct(X),
        "score_assets": model.score_assets(X),
        "encode_means": means,
        "encode_variances": variances,
        "volatility": model.volatility(X),
    }


# ------------------------------------------------------------------ shapes and date alignment


def test_early_stopping_holds_out_windows_only_when_there_are_enough():
    short, long = make_returns(600), make_returns(700)  # 596 and 696 windows of 5 days
    assert FinVAE(**FAST).fit(short).history_["val_loss"].isna().all()  # too few to hold out a tenth
    assert FinVAE(**FAST).fit(long).history_["val_loss"].notna().all()


def test_fit_returns_self_and_learns_the_documented_attributes(returns):
    estimator = FinVAE(**FAST)
    assert estimator.fit(returns.iloc[:220]) is estimator
    assert estimator.n_features_in_ == 5
    assert list(estimator.feature_names_in_) == ASSETS
    assert np.isfinite(estimator.threshold_)
    assert list(estimator.history_.columns) == HISTORY_COLUMNS
    assert list(estimator.history_.index) == [1, 2, 3] and estimator.history_.index.name == "epoch"
    assert estimator.mean_.shape == estimator.scale_.shape == (5,)
    assert set(estimator.calibration_) == {"kl", "index_move", "residual", "max_residual"}


def test_outputs_are_aligned_to_the_input_dates(model, returns):
    n_nan = WINDOW - 1
    factors = model.transform(returns)
    assert isinstance(factors, pd.DataFrame)
    assert factors.index.equals(returns.index)
    assert list(factors.columns) == ["factor_0", "factor_1", "factor_2"]
    assert factors.iloc[:n_nan].isna().all().all() and factors.iloc[n_nan:].notna().all().all()

    scores = model.score(returns)
    assert isinstance(scores, pd.Series) and scores.name == "score"
    assert scores.index.equals(returns.index)
    assert scores.iloc[:n_nan].isna().all() and np.isfinite(scores.iloc[n_nan:]).all()

    flags = model.predict(returns)
    assert isinstance(flags, pd.Series) and flags.dtype == bool and flags.index.equals(returns.index)
    assert not flags.iloc[:n_nan].any()
    pd.testing.assert_series_equal(flags, (scores > model.threshold_).rename("flag"))

    for name in ("reconstruct", "score_assets", "volatility"):
        frame = getattr(model, name)(returns)
        assert isinstance(frame, pd.DataFrame), name
        assert frame.index.equals(returns.index) and frame.columns.equals(returns.columns), name
    recon = model.reconstruct(returns)
    assert recon.iloc[:n_nan].isna().all().all() and recon.iloc[n_nan:].notna().all().all()

    shares = model.score_assets(returns)
    assert shares.iloc[:n_nan].isna().all().all()
    np.testing.assert_allclose(shares.iloc[n_nan:].sum(axis=1), 1.0, rtol=1e-6)  # float32 residuals
    assert ((shares.iloc[n_nan:] >= 0) & (shares.iloc[n_nan:] <= 1)).all().all()

    parts = model.score_parts(returns)
    assert list(parts.columns) == ["market", "residual", "max_residual"]
    pd.testing.assert_series_equal(parts.max(axis=1).rename("score"), scores)

    means, variances = model.encode(returns)
    pd.testing.assert_frame_equal(means, factors)
    assert (variances.iloc[n_nan:] > 0).all().all() and variances.columns.equals(factors.columns)


def test_numpy_in_numpy_out_with_the_same_numbers(model, returns):
    frame_out = _outputs(model, returns)
    with pytest.warns(UserWarning, match="X does not have valid feature names"):  # scikit-learn's warning
        array_out = _outputs(model, returns.to_numpy())
    for name, expected in frame_out.items():
        got = array_out[name]
        assert isinstance(got, np.ndarray), name
        assert got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected.to_numpy(), err_msg=name)
    assert array_out["predict"].dtype == bool


def test_a_model_fitted_on_an_array_has_no_feature_names(returns):
    estimator = FinVAE(**FAST).fit(returns.to_numpy()[:150])
    assert estimator.n_features_in_ == 5 and not hasattr(estimator, "feature_names_in_")
    assert not hasattr(estimator, "asset_names_")
    scores = estimator.score(returns.to_numpy())
    assert scores.shape == (300,) and np.isnan(scores[: WINDOW - 1]).all()
    pd.testing.assert_series_equal(  # a DataFrame then still gets dates back
        estimator.score(returns), pd.Series(scores, index=returns.index, name="score")
    )


def test_contamination_sets_the_share_of_flagged_training_dates(returns):
    train = returns.iloc[:220]
    estimator = FinVAE(**(FAST | dict(contamination=0.05))).fit(train)
    scored = estimator.score(train).notna()
    assert abs(estimator.predict(train)[scored].mean() - 0.05) <= 1.0 / scored.sum()


def test_elbo_is_a_repeatable_finite_scalar(model, returns):
    elbo = model.elbo(returns)
    assert isinstance(elbo, float) and np.isfinite(elbo)
    assert model.elbo(returns) == elbo == elbo_scorer(model, returns)


def test_elbo_counts_a_bad_tick_as_training_does_and_refuses_nothing_to_score(model, returns):
    bad = returns.copy()
    bad.iloc[-1, 0] = 2.0  # a +200 % log return: far beyond the clip, in scaled units
    clipped = returns.copy()
    scale = model.volatility(returns).iloc[-1, 0]  # the last day's scale, known at the close before it
    clipped.iloc[-1, 0] = model.mean_[0] + model.model_.clip * scale
    assert model.elbo(bad) == pytest.approx(model.elbo(clipped), rel=1e-6)
    sparse = returns.iloc[:50].copy()
    sparse.iloc[:, 1:] = np.nan  # one asset a day: below min_coverage
    with pytest.raises(DataError, match="no date of X can be scored"):
        model.elbo(sparse)


def test_a_pair_of_half_lives_scales_by_the_larger_of_the_two_volatilities(model, returns):
    assert model.vol_halflife == (5, 60)  # the default
    single = {}
    for halflife in (5, 60):
        one = copy.deepcopy(model)
        one.vol_halflife = halflife
        one._fitted_structure = one._structure()  # one leg's volatility, read through the same method
        single[halflife] = one.volatility(returns)
    pair = model.volatility(returns)
    pd.testing.assert_frame_equal(pair, np.maximum(single[5], single[60]))
    assert (pair > single[5]).to_numpy().any() and (pair > single[60]).to_numpy().any()  # each leg binds somewhere


def test_single_asset_residuals_are_measured_in_units_of_the_slow_volatility(model, returns):
    # max_residual: (return - reconstruction) / (slow volatility x noise scale), not the faster leg's.
    values, scaled, observed, ends, _, _ = model._prepare(returns)
    _, _, residual, single, seen = model._day_statistics(values, scaled, observed, ends)
    slow = copy.deepcopy(model)
    slow.vol_halflife = 60
    slow._fitted_structure = slow._structure()  # the slow leg alone, read through the same method
    noise = model.model_.log_scale.detach().exp().numpy()
    error = returns.to_numpy()[ends] - model.reconstruct(returns).to_numpy()[ends]
    expected = np.where(seen, error / (slow.volatility(returns).to_numpy()[ends] * noise), 0.0)
    np.testing.assert_allclose(single, expected, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(single) >= np.abs(residual) - 1e-6) and np.any(np.abs(single) > np.abs(residual) * 1.01)


@pytest.mark.parametrize("bad", [(5, -1), (1, 2, 3), (5, "60"), ()])
def test_vol_halflife_must_be_a_positive_number_or_a_pair_of_them(returns, bad):
    with pytest.raises(ValueError, match="vol_halflife must be a number of days > 0 or a pair"):
        FinVAE(vol_halflife=bad, **FAST).fit(returns.iloc[:220])


def test_unfitted_model_says_so(returns):
    for method in ("transform", "score", "predict", "reconstruct", "score_assets", "encode", "volatility"):
        with pytest.raises(NotFittedError):
            getattr(FinVAE(), method)(returns)


# ------------------------------------------------------------------ no look-ahead


@pytest.mark.parametrize("t", [WINDOW - 1, 150, 260, 298])
def test_changing_returns_after_t_changes_no_output_at_or_before_t(model, returns, t):
    rng = np.random.default_rng(t)
    changed = returns.copy()
    after = changed.iloc[t + 1 :]
    wild = rng.normal(0.0, 0.2, size=after.shape)  # a crash regime, gaps, a missing asset
    wild[rng.random(size=wild.shape) < 0.1] = np.nan
    wild[:, 2] = np.nan
    changed.iloc[t + 1 :] = wild
    base, other = _outputs(model, returns), _outputs(model, changed)
    for name in base:
        # identical up to and including t (exact: the same computation on the same numbers)
        got, expected = other[name].iloc[: t + 1], base[name].iloc[: t + 1]
        if isinstance(expected, pd.Series):
            pd.testing.assert_series_equal(got, expected, check_exact=True, obj=name)
        else:
            pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=name)
    # ... and the change is seen after t (the test can tell outputs apart)
    assert not base["score"].iloc[t + 1 :].equals(other["score"].iloc[t + 1 :])
    if t + 2 < len(returns):  # day t + 1's return enters the volatility of t + 2
        assert not base["volatility"].iloc[t + 2 :].equals(other["volatility"].iloc[t + 2 :])


@pytest.mark.parametrize("t", [WINDOW - 1, 77, 210])
def test_outputs_up_to_t_need_no_data_after_t(model, returns, t):
    full, cut = _outputs(model, returns), _outputs(model, returns.iloc[: t + 1])
    for name in full:
        expected = full[name].iloc[: t + 1]
        if name == "predict":
            pd.testing.assert_series_equal(cut[name], expected)
        elif isinstance(expected, pd.Series):
            pd.testing.assert_series_equal(cut[name], expected, rtol=1e-5, atol=1e-6, obj=name)
        else:
            pd.testing.assert_frame_equal(cut[name], expected, rtol=1e-5, atol=1e-6, obj=name)


# ------------------------------------------------------------------ the causal encoder


@pytest.mark.parametrize("window", [3, 5, 20])
def test_a_days_code_sees_at_most_window_days(returns, window):
    estimator = FinVAE(**(FAST | dict(window=window, epochs=1))).fit(returns.iloc[:200])
    reach = estimator.model_.encoder.reach
    assert window - 2 <= reach <= window - 1  # documented: the code of day t sees days t - reach .. t
    if window % 2:
        assert reach == window - 1  # an odd window is seen whole
    rng = np.random.default_rng(window)
    scaled = rng.normal(size=(120, 5)).astype(np.float32)
    ends = np.arange(120)
    mu, log_var, decoded = estimator._encode_decode(scaled, ends)
    t = 90

    before = scaled.copy()
    before[: t - window + 1] = rng.normal(0.0, 3.0, size=(t - window + 1, 5))  # every day up to t - window
    mu_b, log_var_b, decoded_b = estimator._encode_decode(before, ends)
    assert torch.equal(mu_b[t:], mu[t:]) and torch.equal(log_var_b[t:], log_var[t:])
    assert torch.equal(decoded_b[t:], decoded[t:])
    if reach == window - 1:
        assert not torch.equal(mu_b[t - 1], mu[t - 1])  # the day before still sees day t - window

    edge = scaled.copy()
    edge[t - reach] += 3.0  # the oldest day the code of t sees
    mu_e, _, _ = estimator._encode_decode(edge, ends)
    assert not torch.allclose(mu_e[t], mu[t])
    assert torch.equal(mu_e[t + 1 :], mu[t + 1 :])  # and no later day's


def test_training_computes_only_full_window_codes_and_they_match_the_padded_pass(model):
    # Training skips the zero-padded first days (their windows are never counted): the codes it
    # computes must be those that transform/score compute for the same days.
    x = torch.from_numpy(np.random.default_rng(2).normal(size=(3, 60, 5)).astype(np.float32))
    encoder = model.model_.encoder
    mu, log_var = encoder(x)
    mu_full, log_var_full = encoder(x, pad=False)
    assert mu_full.shape == (3, 60 - encoder.reach, model.latent_dim)
    torch.testing.assert_close(mu_full, mu[:, encoder.reach :])
    torch.testing.assert_close(log_var_full, log_var[:, encoder.reach :])


def test_encoding_in_pieces_gives_the_codes_of_one_pass(model):
    scaled = np.random.default_rng(1).normal(size=(100, 5)).astype(np.float32)
    ends = np.arange(WINDOW - 1, 100)
    whole = model._encode_decode(scaled, ends)
    pieces = model._encode_decode(scaled, ends, piece=7)
    for a, b in zip(whole, pieces, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ round trips


def test_save_and_load_give_the_same_model_from_safetensors_and_json_only(model, returns, tmp_path, monkeypatch):
    folder = model.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["finvae.json", "model.safetensors"]
    # model.safetensors is safetensors: an 8-byte little-endian header size, a JSON header, raw tensor bytes
    raw = (folder / "model.safetensors").read_bytes()
    (header_size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_size])
    tensors = set(header) - {"__metadata__"}
    arrays = {"mean_", "scale_"}
    assert arrays <= tensors and all(k.startswith(("model.", "dynamics.")) for k in tensors - arrays)
    json.loads((folder / "finvae.json").read_text())  # plain JSON

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "Unpickler", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = FinVAE.load(folder)
    monkeypatch.undo()

    assert loaded.get_params() == model.get_params()
    assert_same_fitted_state(loaded, model)
    for name, expected in _outputs(model, returns).items():
        got = _outputs(loaded, returns)[name]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=name)


def assert_same_fitted_state(got: FinVAE, expected: FinVAE) -> None:
    """Every fitted attribute (name ending in ``_``) is restored, with the same value."""
    fitted = sorted(k for k in vars(expected) if k.endswith("_") and not k.startswith("_"))
    assert sorted(k for k in vars(got) if k.endswith("_") and not k.startswith("_")) == fitted
    for name in fitted:
        a, b = getattr(got, name), getattr(expected, name)
        if name == "model_":
            assert a.state_dict().keys() == b.state_dict().keys()
            assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in b.state_dict())
        elif isinstance(b, pd.DataFrame):
            pd.testing.assert_frame_equal(a, b, check_index_type=False, obj=name)
            assert a.attrs == b.attrs, name
        elif isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, err_msg=name)
            assert a.dtype == b.dtype, name
        elif isinstance(b, Dynamics):
            assert a.dates.equals(b.dates), name
            for field in ("intercept", "transition", "innovations", "residuals", "codes", "variances", "follows"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=f"{name}.{field}")
                assert getattr(a, field).dtype == getattr(b, field).dtype, f"{name}.{field}"
        else:
            assert a == b, name


@pytest.mark.parametrize(("saved_format", "message"), [
    ("other/1", "does not hold a saved FinVAE"),
    ("finvae.FinVAE/1", "older finvae.*mean squared residual.*Fit the model again"),
    ("finvae.FinVAE/2", "older finvae.*KL and single-asset score parts.*Fit the model again"),
    ("finvae.FinVAE/3", "older finvae.*relative to their recent levels.*Fit the model again"),
    ("finvae.FinVAE/4", "older finvae.*KL part where it now has a market part.*Fit the model again"),
])
def test_load_refuses_a_folder_that_holds_something_else(model, tmp_path, saved_format, message):
    folder = model.save(tmp_path / "model")
    state = json.loads((folder / "finvae.json").read_text())
    (folder / "finvae.json").write_text(json.dumps(state | {"format": saved_format}))
    with pytest.raises(DataError, match=message):
        FinVAE.load(folder)


@pytest.mark.parametrize("dates", ["America/New_York", "strings"])
def test_save_and_load_keep_dates_in_a_time_zone_with_summer_time_or_as_strings(returns, tmp_path, dates):
    """A zone with summer time has two UTC offsets, and string dates are no DatetimeIndex: both load back."""
    data = returns.tz_localize(dates) if dates != "strings" else returns.set_axis(returns.index.strftime("%Y-%m-%d"))
    model = FinVAE(**FAST).fit(data.iloc[:220])
    loaded = FinVAE.load(model.save(tmp_path / "model"))
    assert_same_fitted_state(loaded, model)
    pd.testing.assert_series_equal(loaded.score(data), model.score(data))
    np.testing.assert_array_equal(loaded.simulate(data, horizon=3, n_paths=4, random_state=0),
                                  model.simulate(data, horizon=3, n_paths=4, random_state=0))


def test_save_writes_numpy_parameters_and_warns_that_a_random_state_instance_is_not_saved(returns, tmp_path):
    searched = FinVAE(**FAST | dict(epochs=np.int64(2), learning_rate=np.float64(3e-3))).fit(returns.iloc[:220])
    assert FinVAE.load(searched.save(tmp_path / "numpy")).get_params()["epochs"] == 2
    drawn = FinVAE(**FAST | dict(random_state=np.random.RandomState(0))).fit(returns.iloc[:220])
    with pytest.warns(UserWarning, match="RandomState instance.*saved as None"):
        folder = drawn.save(tmp_path / "drawn")
    pd.testing.assert_series_equal(FinVAE.load(folder).score(returns), drawn.score(returns))


def test_a_save_that_fails_leaves_the_previous_model_whole(model, returns, tmp_path, monkeypatch):
    folder = model.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    other = FinVAE(**FAST | dict(random_state=1)).fit(returns.iloc[:220])

    def failing_dumps(*args, **kwargs):
        raise TypeError("not serializable")

    monkeypatch.setattr("finvae._persistence.json.dumps", failing_dumps)
    with pytest.raises(TypeError):
        other.save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    pd.testing.assert_series_equal(FinVAE.load(folder).score(returns), model.score(returns))
    with pytest.raises(DataError, match="is a file"):
        model.save(folder / "finvae.json")


def test_sample_from_the_static_prior_checks_n(model):
    for n in (0, -1, 2.5):
        with pytest.raises(DataError, match="n must be a whole number of at least 1"):
            model.sample(n, dynamics=False)


def test_pickle_and_joblib_round_trips(model, returns, tmp_path):
    expected = model.score(returns)
    unpickled = pickle.loads(pickle.dumps(model))
    assert_same_fitted_state(unpickled, model)
    pd.testing.assert_series_equal(unpickled.score(returns), expected, check_exact=True)
    joblib.dump(model, tmp_path / "model.joblib")
    restored = joblib.load(tmp_path / "model.joblib")
    assert_same_fitted_state(restored, model)
    pd.testing.assert_series_equal(restored.score(returns), expected, check_exact=True)
    pd.testing.assert_frame_equal(restored.transform(returns), model.transform(returns), check_exact=True)


# ------------------------------------------------------------------ seeded determinism


def test_same_seed_same_numbers_other_seed_other_numbers(returns):
    train = returns.iloc[:150]
    fits = [FinVAE(**(FAST | dict(random_state=seed, epochs=2))).fit(train) for seed in (7, 7, 8)]
    histories = [f.history_.drop(columns="seconds") for f in fits]
    scores = [f.score(returns) for f in fits]
    pd.testing.assert_frame_equal(histories[0], histories[1], check_exact=True)
    pd.testing.assert_series_equal(scores[0], scores[1], check_exact=True)
    assert fits[0].threshold_ == fits[1].threshold_
    assert not histories[0]["train_loss"].equals(histories[2]["train_loss"])
    assert not np.allclose(scores[0].dropna(), scores[2].dropna())


def test_sample_repeats_with_its_seed(model):
    a = model.sample(4, random_state=3)
    assert a.shape == (4, WINDOW, 5) and np.isfinite(a).all()
    np.testing.assert_array_equal(model.sample(4, random_state=3), a)
    assert not np.allclose(model.sample(4, random_state=4), a)
    means = model.sample(4, random_state=3, noise=False)
    assert not np.allclose(means, a)  # noise=True adds the likelihood's noise


# ------------------------------------------------------------------ sklearn habits


def test_get_params_set_params_and_clone(model):
    contract = {"window", "latent_dim", "epochs", "batch_size", "beta", "contamination", "random_state", "device"}
    assert contract | {"verbose"} <= set(FinVAE().get_params())
    estimator = FinVAE(window=9)
    assert estimator.set_params(latent_dim=4, contamination=0.02) is estimator
    assert estimator.get_params()["latent_dim"] == 4 and estimator.get_params()["window"] == 9
    twin = clone(model)
    assert twin.get_params() == model.get_params()
    assert not hasattr(twin, "model_") and not hasattr(twin, "threshold_")  # a clone is unfitted
    assert "window=5" in repr(model)


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # array input on purpose
def test_fit_transform_and_set_output(model, returns):
    train = returns.iloc[:220]
    pd.testing.assert_frame_equal(FinVAE(**FAST).fit_transform(train), model.transform(train), check_exact=True)
    pandas_out = copy.deepcopy(model).set_output(transform="pandas")
    factors = pandas_out.transform(returns.to_numpy())  # sklearn's set_output wraps array input
    assert isinstance(factors, pd.DataFrame) and list(factors.columns) == ["factor_0", "factor_1", "factor_2"]
    np.testing.assert_array_equal(factors.to_numpy(), model.transform(returns).to_numpy())


def test_parameters_are_checked_at_fit_not_at_construction(returns):
    for bad, name in [
        (dict(window=1), "window"),
        (dict(contamination=0.7), "contamination"),
        (dict(contamination=0.0), "contamination"),
        (dict(latent_dim=0), "latent_dim"),
        (dict(min_coverage=0.0), "min_coverage"),
        (dict(learning_rate=-1.0), "learning_rate"),
    ]:
        estimator = FinVAE(**bad)  # no error yet: sklearn validates in fit
        with pytest.raises(InvalidParameterError, match=f"'{name}' parameter of FinVAE must be"):
            estimator.fit(returns)
    assert issubclass(InvalidParameterError, ValueError)


def test_runs_inside_a_pipeline(returns):
    simple = np.expm1(returns)  # simple returns in, log returns into the model
    pipe = make_pipeline(FunctionTransformer(np.log1p), FinVAE(**FAST)).fit(simple.iloc[:220])
    direct = FinVAE(**FAST).fit(np.log1p(simple.iloc[:220]))
    factors = pipe.transform(simple)
    assert list(factors.columns) == ["factor_0", "factor_1", "factor_2"] and factors.index.equals(returns.index)
    pd.testing.assert_frame_equal(factors, direct.transform(np.log1p(simple)), check_exact=True)
    pd.testing.assert_series_equal(pipe.score(simple), direct.score(np.log1p(simple)), check_exact=True)
    pd.testing.assert_series_equal(pipe.predict(simple), direct.predict(np.log1p(simple)))


def test_grid_search_with_the_elbo_scorer_and_time_series_splits(returns):
    search = GridSearchCV(
        FinVAE(**(FAST | dict(epochs=2))),
        {"latent_dim": [1, 2]},
        scoring=elbo_scorer,
        cv=TimeSeriesSplit(n_splits=2),
    ).fit(returns)
    assert search.best_params_["latent_dim"] in (1, 2)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_score_ == max(search.cv_results_["mean_test_score"])
    assert search.best_estimator_.transform(returns).shape == (300, search.best_params_["latent_dim"])


def test_check_estimator_passes_but_for_the_checks_ruled_out_in_the_code():
    results = check_estimator(
        FinVAE(window=3, epochs=2, random_state=0, verbose=0),
        expected_failed_checks=SKLEARN_CHECKS_RULED_OUT,
        on_skip=None,
    )  # raises on any other failing check
    status = {}
    for result in results:
        status.setdefault(result["check_name"], []).append(result)
    for name, reason in SKLEARN_CHECKS_RULED_OUT.items():
        assert name in status, f"{name} is not a check of this sklearn: drop it from the list"
        assert all(r["status"] == "xfail" for r in status[name]), f"{name} passes now: drop it from the list"
        if reason == SKLEARN_DATA_LOOK_LIKE_PRICES:
            assert all("price levels" in str(r["exception"]) for r in status[name]), name


def test_the_checks_ruled_out_by_the_price_rule_pass_without_it(monkeypatch):
    monkeypatch.setattr(validation, "looks_like_prices", lambda data: False)
    by_design = {k: v for k, v in SKLEARN_CHECKS_RULED_OUT.items() if v != SKLEARN_DATA_LOOK_LIKE_PRICES}
    assert len(by_design) == 2
    results = check_estimator(
        FinVAE(window=3, epochs=2, random_state=0, verbose=0), expected_failed_checks=by_design, on_skip=None
    )
    passed = {r["check_name"] for r in results if r["status"] == "passed"}
    assert set(SKLEARN_CHECKS_RULED_OUT) - set(by_design) <= passed


# ------------------------------------------------------------------ missing values


def _gappy_returns() -> pd.DataFrame:
    returns = make_returns(seed=3)
    rng = np.random.default_rng(3)
    returns.iloc[:80, 4] = np.nan  # EEE lists late
    gaps = rng.random(returns.shape) < 0.03
    returns = returns.mask(gaps)  # random gaps everywhere
    returns.iloc[[150, 151, 230], :3] = np.nan  # 2 of 5 assets that day: coverage 0.4
    return returns


def test_nans_in_training_data_train_and_score_where_coverage_allows():
    returns = _gappy_returns()
    estimator = FinVAE(**FAST).fit(returns)
    assert np.isfinite(estimator.history_["train_loss"]).all()
    coverage = returns.notna().mean(axis=1)
    enough = (coverage >= 0.5) & (np.arange(len(returns)) >= WINDOW - 1)
    assert (~enough).sum() == WINDOW - 1 + 3
    for output in (estimator.score(returns), estimator.transform(returns), estimator.reconstruct(returns)):
        assert np.isfinite(output[enough.to_numpy()]).all(axis=None)
        assert output[~enough.to_numpy()].isna().all(axis=None)
    shares = estimator.score_assets(returns)[enough]
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-6)
    missing = returns[enough].isna().to_numpy()
    assert missing.sum() > 20 and (shares.to_numpy()[missing] == 0).all()  # a missing return is no residual


def test_min_coverage_decides_which_dates_get_a_score():
    returns = _gappy_returns()
    strict = FinVAE(**(FAST | dict(min_coverage=0.9))).fit(returns)
    scores = strict.score(returns)
    late = scores.iloc[WINDOW - 1 : 80]  # EEE not listed yet: 4 of 5 assets = 0.8 < 0.9
    assert late.isna().all()
    assert scores[returns.notna().all(axis=1)].iloc[WINDOW:].notna().all()


def test_a_missing_return_is_not_a_zero_return(model, returns):
    gap = returns.copy()
    gap.iloc[200, 1] = np.nan
    zero = returns.copy()
    zero.iloc[200, 1] = 0.0
    assert model.score_assets(gap).iloc[200, 1] == 0.0
    assert model.score_assets(zero).iloc[200, 1] > 0.0
    assert model.score(gap).iloc[200] != model.score(zero).iloc[200]
    # the trailing volatility carries over a gap but takes in a zero return
    assert model.volatility(gap).iloc[201, 1] == model.volatility(gap).iloc[200, 1]
    assert model.volatility(zero).iloc[201, 1] < model.volatility(zero).iloc[200, 1]


def test_the_callers_data_are_never_modified():
    returns = _gappy_returns()
    copy = returns.copy()
    estimator = FinVAE(**FAST).fit(returns)
    _outputs(estimator, returns)
    estimator.elbo(returns)
    pd.testing.assert_frame_equal(returns, copy, check_exact=True)
    array = returns.to_numpy(copy=True)
    array_copy = array.copy()
    estimator = FinVAE(**FAST).fit(array)
    _outputs(estimator, array)
    np.testing.assert_array_equal(array, array_copy)


def test_the_residual_part_measures_breadth_so_one_jump_cannot_move_it(model, returns):
    # One stock's jump belongs to max_residual; the residual part (a low quantile of the day's
    # squared residuals) rises only when most assets miss their reconstruction at once.
    day = returns.index[250]
    sd, mean = returns.iloc[:220].std(), returns.iloc[:220].mean()
    jump, broken = returns.copy(), returns.copy()
    jump.loc[day, "CCC"] += 10 * sd["CCC"]
    broken.loc[day] = mean + 4 * sd * np.array([1, -1, 1, -1, 1])
    plain, jumped, split = (model.score_parts(X).loc[day] for X in (returns, jump, broken))
    assert jumped["max_residual"] > 4.6 and abs(jumped["residual"] - plain["residual"]) < 0.5
    assert split["residual"] > jumped["residual"] + 3.0


def test_the_market_part_is_the_days_own_statistics_so_a_crisis_keeps_scoring(model):
    # The market part is the day's KL and index move themselves, calibrated: a second day of the
    # same shock scores as high as the first (no level of the days before it to measure against).
    kl, moves = np.full(12, 0.5), np.full(12, 0.1)
    kl[[8, 9]], moves[[8, 9]] = 30.0, 4.0
    residual, seen = np.zeros((12, 5)), np.ones((12, 5), bool)
    surprises = model._part_surprises(model._raw_parts(kl, moves, residual, residual, seen))
    assert surprises["market"][9] == surprises["market"][8] > surprises["market"][7]


def test_the_index_move_is_in_units_of_the_training_volatility(model, returns):
    values, scaled, observed, ends, _, _ = model._prepare(returns)
    _, moves, _, _, _ = model._day_statistics(values, scaled, observed, ends)
    train = returns.iloc[:220]  # the model's training rows (the fixture)
    z = (returns - train.mean()) / train.std(ddof=0)
    np.testing.assert_allclose(moves, z.mean(axis=1).abs().to_numpy()[ends], rtol=1e-10)


def test_each_assets_tail_is_fitted_on_all_its_observed_training_days(returns):
    gappy = returns.iloc[:220].copy()
    gappy.iloc[180:200, 1] = np.nan  # BBB is missing for 20 days
    fitted = FinVAE(**FAST).fit(gappy)
    values, scaled, observed, ends, _, _ = fitted._prepare(gappy)
    _, _, _, single, seen = fitted._day_statistics(values, scaled, observed, ends)
    for i in (0, 1):
        assert fitted.asset_calibration_[i] == fit_tail(np.abs(single[seen[:, i], i]), pareto=False)
    assert seen[:, 1].sum() == seen[:, 0].sum() - 20


def test_a_bigger_single_asset_jump_is_clearly_more_surprising(model, returns):
    # Each asset's residual has an exponential (not Pareto) tail, and their maximum is
    # calibrated in nats: doubling a jump must add nats, not a sliver of a nat.
    jumped = returns.copy()
    sd = returns.iloc[:220].std()
    day_10, day_20 = jumped.index[250], jumped.index[280]
    jumped.loc[day_10, "CCC"] += 10 * sd["CCC"]
    jumped.loc[day_20, "CCC"] += 20 * sd["CCC"]
    parts = model.score_parts(jumped)
    assert parts.loc[day_10, "max_residual"] > 4.6  # rarer than 1 % of training days
    assert parts.loc[day_20, "max_residual"] > parts.loc[day_10, "max_residual"] + 3.0
    assert model.score(jumped).loc[[day_10, day_20]].min() > model.threshold_


def test_set_params_on_the_structure_after_fit_asks_for_a_refit(returns):
    from sklearn.exceptions import NotFittedError

    model = FinVAE(**FAST).fit(returns.iloc[:220])
    model.set_params(contamination=0.05)  # not the network's structure: still fitted
    model.score(returns.iloc[:60])
    model.set_params(window=WINDOW + 3)
    with pytest.raises(NotFittedError, match=r"set_params changed window 5 → 8 after fit.*Refit"):
        model.score(returns)
    with pytest.raises(NotFittedError, match="window"):
        model.save("never-written")
    model.set_params(window=WINDOW)
    model.score(returns.iloc[:60])  # set back: fitted again


@pytest.mark.parametrize("halflife", [(float("inf"), 5), (True, 60), (5, float("nan"))])
def test_vol_halflife_pairs_are_checked_like_single_values(returns, halflife):
    with pytest.raises(ValueError, match="vol_halflife must be a number of days > 0"):
        FinVAE(**FAST, vol_halflife=halflife).fit(returns.iloc[:220])


def test_half_lives_as_a_list_or_a_tuple_are_the_same_structure(returns):
    model = FinVAE(**FAST, vol_halflife=[5, 60]).fit(returns.iloc[:220])
    model.set_params(vol_halflife=(5, 60))
    model.score(returns.iloc[:60])  # the same half-lives: still fitted
    model.vol_halflife = [5, 60]
    model.vol_halflife.append(90)  # changed in place after fit: caught too
    with pytest.raises(Exception, match="set_params changed vol_halflife"):
        model.score(returns.iloc[:60])
