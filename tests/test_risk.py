"""finvae.risk: covariance, VaR and ES forecasts — shapes, PSD, no look-ahead, errors, skfolio interop."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from finvae import DataError, FinVAE
from finvae.risk import (
    MIN_DAYS,
    MIN_OUTCOMES,
    covariance,
    covariance_forecasts,
    expected_shortfall,
    tail_risk,
    value_at_risk,
)

ASSETS = ["AAA", "BBB", "CCC", "DDD", "EEE"]
FAST = dict(window=5, hidden=8, epochs=3, random_state=0, verbose=0)
N_DAYS = 420


def make_returns(n_days: int = N_DAYS, seed: int = 0) -> pd.DataFrame:
    """One market factor whose volatility doubles halfway, business-day dates."""
    rng = np.random.default_rng(seed)
    vol = np.where(np.arange(n_days) < n_days // 2, 0.01, 0.02)[:, None]
    market = rng.normal(0.0, 1.0, size=(n_days, 1)) * vol
    values = market * rng.uniform(0.5, 1.5, size=len(ASSETS)) + rng.normal(0.0, 0.006, size=(n_days, len(ASSETS)))
    return pd.DataFrame(values, index=pd.bdate_range("2020-01-01", periods=n_days), columns=ASSETS)


@pytest.fixture(scope="module")
def returns() -> pd.DataFrame:
    return make_returns()


@pytest.fixture(scope="module")
def model(returns) -> FinVAE:
    return FinVAE(**FAST).fit(returns.iloc[:200])


def test_covariance_is_a_symmetric_psd_assets_by_assets_frame(model, returns):
    cov = model.covariance(returns)
    assert isinstance(cov, pd.DataFrame)
    assert list(cov.index) == ASSETS and list(cov.columns) == ASSETS
    values = cov.to_numpy()
    assert np.isfinite(values).all()
    np.testing.assert_allclose(values, values.T, rtol=1e-12, atol=1e-15)
    assert np.linalg.eigvalsh(values).min() > 0


def test_the_forecast_moves_with_the_market(model, returns):
    # the market's volatility doubles halfway: the equal-weight portfolio's variance about quadruples
    weights = np.full(len(ASSETS), 1.0 / len(ASSETS))
    calm = weights @ model.covariance(returns.iloc[:190]).to_numpy() @ weights
    wild = weights @ model.covariance(returns).to_numpy() @ weights
    assert wild > 2.0 * calm
    assert 0.5 < calm / returns.iloc[:190].mean(axis=1).var() < 2.0


def test_the_sibling_gives_every_date_and_matches_the_single_date_method(model, returns):
    covs = covariance_forecasts(model, returns, horizon=3)
    assert isinstance(covs.index, pd.MultiIndex)
    assert covs.shape == (len(returns) * len(ASSETS), len(ASSETS))
    assert list(covs.index.get_level_values(0).unique()) == list(returns.index)
    np.testing.assert_allclose(covs.loc[returns.index[-1]].to_numpy(), model.covariance(returns, horizon=3).to_numpy())
    some = covariance_forecasts(model, returns, horizon=3, dates=returns.index[[100, 300]])
    np.testing.assert_allclose(some.to_numpy(), covs.loc[returns.index[[100, 300]]].to_numpy())
    # the first window - 1 dates, and dates with too few days in the lookback, get NaN
    assert covs.loc[returns.index[0]].isna().all().all()
    assert covs.loc[returns.index[30]].notna().all().all()


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # array input on purpose
def test_array_input_gives_arrays_with_the_same_numbers(model, returns):
    got = covariance(model, returns.to_numpy(), horizon=2)
    np.testing.assert_allclose(got, model.covariance(returns, horizon=2).to_numpy())
    stack = covariance_forecasts(model, returns.to_numpy(), dates=[50, 60])
    assert stack.shape == (2, len(ASSETS), len(ASSETS))


def test_a_longer_horizon_forecasts_more_risk_and_volatility_mean_reverts(model, returns):
    one, five, twenty = (np.diag(model.covariance(returns.iloc[:260], horizon=h)) for h in (1, 5, 20))
    assert (five > one).all() and (twenty > five).all()
    # after the volatility jump the fast volatility is above the slow one: the daily forecast falls with h
    assert (twenty / 20 < one).all()


@pytest.mark.parametrize("t", [250, 330])
def test_changing_the_future_leaves_past_forecasts_unchanged(model, returns, t):
    changed = returns.copy()
    changed.iloc[t + 1 :] *= -3.0
    for X in (changed, changed.iloc[: t + 1]):
        np.testing.assert_allclose(
            covariance_forecasts(model, X, dates=returns.index[[t]]).to_numpy(),
            covariance_forecasts(model, returns, dates=returns.index[[t]]).to_numpy(),
        )
    past = slice(None, returns.index[t])
    for method in (model.value_at_risk, model.expected_shortfall):
        pd.testing.assert_series_equal(method(changed, horizon=2)[past], method(returns, horizon=2)[past])


def test_var_and_es_are_positive_losses_aligned_to_the_dates_with_es_above_var(model, returns):
    var = model.value_at_risk(returns)
    es = model.expected_shortfall(returns)
    assert var.name == "value_at_risk" and es.name == "expected_shortfall"
    assert var.index.equals(returns.index) and es.index.equals(returns.index)
    known = var.notna()
    # the first covariance forecast is at position window - 1 + MIN_DAYS - 1; a VaR needs MIN_OUTCOMES
    # outcomes of forecasts after it, the last one's day over: NaN before, a number from then on
    first = FAST["window"] - 1 + MIN_DAYS - 1 + MIN_OUTCOMES
    assert not known.iloc[:first].any() and known.iloc[first:].all()
    assert (var[known] > 0).all()
    assert (es[known] >= var[known]).all()
    assert es.notna().equals(known)


def test_tail_risk_gives_both_in_one_pass(model, returns):
    both = tail_risk(model, returns, alpha=0.05, horizon=2)
    assert list(both.columns) == ["value_at_risk", "expected_shortfall"]
    pd.testing.assert_series_equal(both["value_at_risk"], model.value_at_risk(returns, alpha=0.05, horizon=2))
    pd.testing.assert_series_equal(both["expected_shortfall"], model.expected_shortfall(returns, alpha=0.05, horizon=2))


def test_var_grows_with_the_horizon_and_the_confidence(model, returns):
    late = returns.index[-50:]
    one, ten = (model.value_at_risk(returns, horizon=h)[late] for h in (1, 10))
    assert (ten > one).all()
    assert (model.value_at_risk(returns, alpha=0.01)[late] >= model.value_at_risk(returns, alpha=0.05)[late]).all()


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")  # array input on purpose
def test_weights_by_name_in_any_order_equal_weights_by_position(model, returns):
    weights = pd.Series([0.4, 0.3, 0.2, 0.1, 0.0], index=ASSETS)
    by_name = model.value_at_risk(returns, weights=weights.iloc[::-1])
    by_position = value_at_risk(model, returns, weights=weights.to_numpy())
    pd.testing.assert_series_equal(by_name, by_position)
    equal = model.value_at_risk(returns)
    pd.testing.assert_series_equal(equal, model.value_at_risk(returns, weights=np.full(5, 0.2)))
    np.testing.assert_allclose(
        expected_shortfall(model, returns.to_numpy()), model.expected_shortfall(returns).to_numpy(), equal_nan=True
    )
    as_dict = model.value_at_risk(returns, weights=weights.iloc[::-1].to_dict())  # {asset: weight}, as skfolio gives
    pd.testing.assert_series_equal(as_dict, by_name)


def test_one_asset_as_a_series_is_a_one_column_frame(returns):
    one = returns["AAA"]
    model = FinVAE(**FAST).fit(one.iloc[:200])
    frame = returns[["AAA"]]
    pd.testing.assert_series_equal(value_at_risk(model, one), value_at_risk(model, frame))
    pd.testing.assert_series_equal(expected_shortfall(model, one), expected_shortfall(model, frame))
    pd.testing.assert_frame_equal(tail_risk(model, one), tail_risk(model, frame))
    pd.testing.assert_frame_equal(covariance(model, one), covariance(model, frame))
    day = returns.index[300]
    pd.testing.assert_frame_equal(covariance_forecasts(model, one, dates=[day]),
                                  covariance_forecasts(model, frame, dates=[day]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(weights=[0.5, 0.5]), "one number per asset"),
        (dict(weights=pd.Series(0.2, index=["AAA", "BBB", "CCC", "DDD", "ZZZ"])), "unexpected \\['ZZZ'\\]"),
        (dict(weights=[0.2, np.nan, 0.2, 0.2, 0.2]), "must be finite.*BBB"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=0.5), "alpha"),
        (dict(alpha=-0.1), "alpha"),
        (dict(horizon=0), "horizon"),
        (dict(horizon=1.5), "horizon"),
    ],
)
def test_bad_input_is_named(model, returns, kwargs, message):
    for method in (model.value_at_risk, model.expected_shortfall):
        with pytest.raises(DataError, match=message):
            method(returns, **kwargs)


def test_bad_horizon_dates_and_assets_are_named(model, returns):
    with pytest.raises(DataError, match="horizon"):
        model.covariance(returns, horizon=0)
    with pytest.raises(DataError, match="not dates of X"):
        covariance_forecasts(model, returns, dates=[pd.Timestamp("1999-01-01")])
    with pytest.raises(DataError, match="assets differ"):
        model.covariance(returns.rename(columns={"AAA": "ZZZ"}))


def test_inputs_are_not_modified(model, returns):
    before = returns.copy()
    weights = pd.Series(0.2, index=ASSETS)
    model.value_at_risk(returns, weights=weights)
    covariance_forecasts(model, returns, horizon=2)
    pd.testing.assert_frame_equal(returns, before)
    assert (weights == 0.2).all()


def test_skfolio_mean_risk_takes_finvae_covariance(returns):
    pytest.importorskip("skfolio")
    from skfolio.optimization import MeanRisk
    from skfolio.prior import EmpiricalPrior

    from finvae import FinVAECovariance

    estimator = FinVAECovariance(estimator=FinVAE(**FAST), horizon=5)
    estimator.fit(returns.iloc[:300])
    expected = FinVAE(**FAST).fit(returns.iloc[:300]).covariance(returns.iloc[:300], horizon=5).to_numpy() / 5
    np.testing.assert_allclose(estimator.covariance_, expected, rtol=1e-6)
    prior = EmpiricalPrior(covariance_estimator=FinVAECovariance(estimator=FinVAE(**FAST)))
    portfolio = MeanRisk(prior_estimator=prior)
    portfolio.fit(returns.iloc[:300])
    assert portfolio.weights_.shape == (len(ASSETS),)
    assert np.isclose(portfolio.weights_.sum(), 1.0)


def test_skfolio_estimator_can_use_a_fitted_model_without_refitting(model, returns):
    pytest.importorskip("skfolio")
    from finvae import FinVAECovariance

    estimator = FinVAECovariance(estimator=model, refit=False).fit(returns)
    assert estimator.estimator_ is model
    np.testing.assert_allclose(estimator.covariance_, model.covariance(returns).to_numpy(), rtol=1e-6)
    with pytest.raises(DataError, match="no covariance forecast"):
        FinVAECovariance(estimator=model, refit=False).fit(returns.iloc[:10])
    # A clone (cross-validation) drops the fit; FrozenEstimator keeps it, and the error says so.
    from sklearn.base import clone
    from sklearn.frozen import FrozenEstimator

    with pytest.raises(NotFittedError, match="FrozenEstimator"):
        clone(FinVAECovariance(estimator=model, refit=False)).fit(returns)
    frozen = clone(FinVAECovariance(estimator=FrozenEstimator(model), refit=False)).fit(returns)
    np.testing.assert_allclose(frozen.covariance_, estimator.covariance_)
    with pytest.raises(ValueError, match="'refit' parameter of FinVAECovariance must be an instance of 'bool'"):
        FinVAECovariance(estimator=model, refit="no").fit(returns)  # would refit and drop the model given
    with pytest.raises(TypeError, match=r"takes no fit parameters.*\['sample_weight'\]"):
        FinVAECovariance(estimator=model, refit=False).fit(returns, sample_weight=np.ones(len(returns)))
    with pytest.raises(ValueError, match="'horizon' parameter of FinVAECovariance must be an int in the range"):
        FinVAECovariance(estimator=model, refit=False, horizon=0).fit(returns)


def test_finvae_imports_without_skfolio():
    code = (
        "import sys; sys.modules['skfolio'] = None; import finvae; "
        "assert 'FinVAE' in dir(finvae)\n"
        "try:\n    finvae.FinVAECovariance\nexcept ImportError as e:\n    assert 'finvae[skfolio]' in str(e)\n"
        "else:\n    raise SystemExit('no ImportError')"
    )
    import subprocess

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_submodules_are_attributes_after_a_plain_import():
    import subprocess

    code = "import finvae; finvae.risk.covariance_forecasts; finvae.simulation.fit_dynamics; finvae.backtest"
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_risk_of_an_unfitted_model_is_not_fitted_error(returns):
    for forecast in (value_at_risk, expected_shortfall, tail_risk):
        with pytest.raises(NotFittedError):
            forecast(FinVAE(), returns)


def test_forecast_dates_as_one_string_or_in_a_time_zone(model, returns):
    day = returns.index[300]
    expected = covariance_forecasts(model, returns, dates=[day])
    one = covariance_forecasts(model, returns, dates=str(day.date()))
    np.testing.assert_array_equal(one.to_numpy(), expected.to_numpy())
    in_utc = covariance_forecasts(model, returns.tz_localize("UTC"), dates=[str(day.date())])
    np.testing.assert_array_equal(in_utc.to_numpy(), expected.to_numpy())
    positions = covariance_forecasts(model, returns.reset_index(drop=True), dates=[300])
    np.testing.assert_array_equal(positions.to_numpy(), expected.to_numpy())
    with pytest.raises(DataError, match="not dates of X"):
        covariance_forecasts(model, returns, dates=["1999-01-04"])


def test_a_late_listing_does_not_read_as_a_regime_change_of_every_asset(model, returns):
    """Before a listing an asset's second moment is ~0: its first moves must not inflate the others' risk."""
    late = returns.copy()
    late.iloc[:300, 0] = np.nan  # AAA lists on row 300
    day = returns.index[330]
    full = np.diag(model.covariance(returns.loc[:day]).to_numpy())
    listed = np.diag(model.covariance(late.loc[:day]).to_numpy())
    np.testing.assert_allclose(listed[1:], full[1:], rtol=0.5)  # the others: as without the gap, not several times


def test_dates_without_any_return_are_left_out_of_var(model, returns):
    """A holiday row (no asset has a return) is no trading day: it changes no VaR and gets none."""
    with_holidays = pd.concat([returns, pd.DataFrame(np.nan, index=returns.index[[300, 340]] + pd.Timedelta(hours=12),
                                                     columns=returns.columns)]).sort_index()
    var = model.value_at_risk(with_holidays)
    assert var.index.equals(with_holidays.index) and var[with_holidays.isna().all(axis=1)].isna().all()
    pd.testing.assert_series_equal(var.loc[returns.index], model.value_at_risk(returns), check_freq=False)


def test_risk_refuses_an_empty_portfolio_a_horizon_past_the_data_and_fractional_rows(model, returns):
    with pytest.raises(DataError, match="weights are all zero"):
        model.value_at_risk(returns, weights=np.zeros(len(ASSETS)))
    with pytest.raises(DataError, match=f"horizon={len(returns)} days is not shorter than X"):
        model.value_at_risk(returns, horizon=len(returns))
    with pytest.raises(DataError, match="whole row positions"):
        covariance_forecasts(model, returns.to_numpy(), dates=[300.5])


def test_portfolio_returns_are_the_var_s_portfolio_on_trading_days_for_an_aligned_backtest(model, returns):
    merged = returns.copy()
    merged.iloc[300] = np.nan  # a holiday row of a merged calendar
    merged.iloc[310:, 4] = np.nan  # EEE delisted: its weight stays, its return counts as 0
    weights = pd.Series([0.4, 0.3, 0.2, 0.1, 0.2], index=ASSETS)
    from finvae.risk import portfolio_returns

    pnl = portfolio_returns(model, merged, weights)
    assert merged.index[300] not in pnl.index and len(pnl) == len(merged) - 1
    expected = merged.drop(index=merged.index[300]).fillna(0.0) @ weights
    pd.testing.assert_series_equal(pnl, expected.rename("portfolio"))
    var = model.value_at_risk(merged, weights=weights)
    paired = pd.concat([-pnl.shift(-1), var.loc[pnl.index]], axis=1).dropna()
    assert merged.index[299] in paired.index  # the day before the holiday is judged on the day after it
    np.testing.assert_array_equal(portfolio_returns(model, merged.to_numpy(), weights.to_numpy()), pnl.to_numpy())


def test_a_last_date_without_returns_and_a_boolean_mask_of_dates(model, returns):
    holiday = returns.copy()
    holiday.iloc[-1] = np.nan
    with pytest.raises(DataError, match=r"last date, .* has no return for any asset \(a holiday\?\)"):
        covariance(model, holiday)
    mask = np.zeros(len(returns), bool)
    mask[-3:] = True
    by_mask = covariance_forecasts(model, returns.to_numpy(), dates=mask)
    np.testing.assert_allclose(by_mask, covariance_forecasts(model, returns.to_numpy(), dates=np.flatnonzero(mask)))
    with pytest.raises(DataError, match="one value per row of X"):
        covariance_forecasts(model, returns.to_numpy(), dates=mask[:-1])


def test_portfolio_returns_and_covariance_check_their_input_first(model, returns):
    from finvae.risk import portfolio_returns

    with pytest.raises(DataError, match="the same assets in another order"):
        portfolio_returns(model, returns[ASSETS[::-1]])
    with pytest.raises(DataError):  # named, not an IndexError from the empty-last-row check
        covariance(model, returns.iloc[:0])


def test_finvae_and_its_doctests_load_without_the_optional_skfolio(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    code = ("import sys; sys.modules['skfolio'] = sys.modules['skfolio.moments'] = None\n"
            "from finvae import *\n"
            "import pytest; sys.exit(pytest.main(['--collect-only', '-q', '-p', 'no:cacheprovider', 'finvae']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "error" not in done.stdout.lower()


def test_covariance_forecasts_beyond_the_machine_s_memory_are_refused_before_any_work(model, returns, monkeypatch):
    import os

    from finvae.risk import covariance_forecasts

    monkeypatch.setattr(os, "sysconf", lambda name: {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 10}[name])  # 40 KiB
    with pytest.raises(DataError, match=r"need about .* GiB .*more than this machine's .*Pass dates="):
        covariance_forecasts(model, returns)
    monkeypatch.undo()
    assert covariance_forecasts(model, returns, dates=returns.index[-2:]).shape == (2 * len(ASSETS), len(ASSETS))


def test_a_late_listing_and_a_data_gap_keep_the_asset_s_own_risk(model, returns):
    """Missing days are zero surprises in the co-moments, not in an asset's own variance, nor in a VaR's regime."""
    late = returns.copy()
    late.iloc[:300, 0] = np.nan  # AAA lists on row 300: 30 days of it in the lookback below
    day = returns.index[330]
    full = model.covariance(returns.loc[:day]).to_numpy()
    listed = model.covariance(late.loc[:day]).to_numpy()
    assert 0.5 < listed[0, 0] / full[0, 0] < 2.0  # before: the zeros of 270 missing days cut it to a fraction
    second_day = model.covariance(late.iloc[:302]).to_numpy()
    assert second_day[0, 0] > 0.5 * model.covariance(returns.iloc[:302]).to_numpy()[0, 0]

    alone = pd.Series([1.0, 0.0, 0.0, 0.0, 0.0], index=ASSETS)
    gap = returns.copy()
    gap.iloc[-15:, 0] = np.nan  # AAA's feed stops 15 days before the end
    before = model.value_at_risk(returns, weights=alone).iloc[-16]
    assert model.value_at_risk(gap, weights=alone).iloc[-1] > 0.7 * before  # before: it fell towards 0


def test_the_var_s_regime_skips_a_held_asset_s_data_gap_but_not_a_delisting():
    """A gap of up to MIN_DAYS days is skipped; a longer absence (a delisting) is not, nor is a late listing."""
    from finvae.risk import MIN_DAYS, _data_gaps

    held = np.zeros((100, 2))
    held[:10, 0] = np.nan  # A lists on row 10: not a gap
    held[30:35, 0] = np.nan  # a 5-day gap in A's data
    held[50:, 1] = np.nan  # B delists on row 50
    gap = _data_gaps(held)
    expected = np.zeros(100, dtype=bool)
    expected[30:35] = True
    expected[50:50 + MIN_DAYS] = True
    np.testing.assert_array_equal(gap, expected)
    np.testing.assert_array_equal(_data_gaps(held[:60]), expected[:60])  # causal: the past reads no later day


def test_covariance_forecasts_leave_out_rows_without_any_return(model, returns):
    holiday = returns.index[300] + pd.Timedelta(hours=12)
    with_holiday = pd.concat([returns, pd.DataFrame(np.nan, index=[holiday], columns=ASSETS)]).sort_index()
    days = [returns.index[301], returns.index[350], holiday]
    got = covariance_forecasts(model, with_holiday, dates=days)
    pd.testing.assert_frame_equal(got.loc[days[:2]], covariance_forecasts(model, returns, dates=days[:2]))
    assert got.loc[holiday].isna().all().all()
    named = returns.rename_axis(index="when", columns="Ticker")
    assert covariance_forecasts(model, named, dates=days[:1]).index.names == ["when", "Ticker"]
    twice = pd.concat([returns, pd.DataFrame(np.nan, index=returns.index[-1:], columns=ASSETS)])
    with pytest.raises(DataError, match="duplicate"):  # a repeated date is refused, even with one copy empty
        covariance(model, twice)


def test_time_varying_weights_and_row_positions_on_dates_are_explained(model, returns):
    with pytest.raises(DataError, match="Weights that change over time are not supported: call once per rebalancing"):
        model.value_at_risk(returns, weights=pd.DataFrame(0.2, index=returns.index, columns=ASSETS))
    with pytest.raises(DataError, match=r"row positions, which are for array input; X's index is dates"):
        covariance_forecasts(model, returns, dates=[0, 1])


def test_skfolio_estimator_leaves_out_holiday_rows_and_names_a_thin_last_date(model, returns):
    pytest.importorskip("skfolio")
    from sklearn.frozen import FrozenEstimator
    from sklearn.utils import get_tags

    from finvae import FinVAECovariance

    assert get_tags(FinVAECovariance()).input_tags.allow_nan
    plain = FinVAECovariance(estimator=FrozenEstimator(model), refit=False).fit(returns)
    holiday = pd.concat([returns, pd.DataFrame(np.nan, index=[returns.index[-1] + pd.Timedelta(days=1)],
                                               columns=ASSETS)])
    np.testing.assert_allclose(FinVAECovariance(estimator=FrozenEstimator(model), refit=False).fit(holiday).covariance_,
                               plain.covariance_)
    thin = returns.copy()
    thin.iloc[-1, :3] = np.nan  # 2 of 5 assets quoted on the last day
    with pytest.raises(DataError, match=r"2 of 5 assets have a return there, fewer than min_coverage \(50%\)"):
        FinVAECovariance(estimator=FrozenEstimator(model), refit=False).fit(thin)
