"""Bad input: each problem raises finvae.DataError (a ValueError) whose message names it; one price rule."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

import finvae._validation as validation
from finvae import DataError, FinVAE
from finvae._validation import check_returns
from finvae.datasets import looks_like_prices


def make_returns(n_days: int = 120, assets=("AAA", "BBB", "CCC", "DDD"), seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    market = rng.normal(0.0, 0.01, size=(n_days, 1))
    values = market + rng.normal(0.0, 0.005, size=(n_days, len(assets)))
    return pd.DataFrame(values, index=pd.bdate_range("2021-01-04", periods=n_days), columns=list(assets))


@pytest.fixture(scope="module")
def fitted() -> FinVAE:
    return FinVAE(window=5, epochs=1, hidden=8, random_state=0, verbose=0).fit(make_returns())


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


# ------------------------------------------------------------------ each problem, named


def test_nan_only_column():
    returns = make_returns()
    returns["CCC"] = np.nan
    with pytest.raises(DataError, match=r"'CCC' hold no data \(all NaN\)"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_infinite_values_name_the_column_and_date():
    returns = make_returns()
    returns.iloc[7, 1] = np.inf
    returns.iloc[9, 2] = -np.inf
    with pytest.raises(DataError, match=r"2 infinite value\(s\), the first in column 'BBB' on 2021-01-13"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_non_numeric_columns():
    returns = make_returns()
    returns["sector"] = "tech"
    with pytest.raises(DataError, match=r"must be numeric.*'sector'"):
        FinVAE(window=5, verbose=0).fit(returns)
    with pytest.raises(DataError, match=r"must be numeric.*'flag'"):
        FinVAE(window=5, verbose=0).fit(make_returns().assign(flag=True))  # bools are not returns either


def test_object_arrays_of_non_numbers():
    values = make_returns().to_numpy().astype(object)
    values[3, 0] = "n/a"
    with pytest.raises(DataError, match="must be numeric"):
        check_returns(values, window=5)
    values[3, 0] = {"a": 1}
    with pytest.raises(TypeError, match="must be numeric"):
        check_returns(values, window=5)


def test_duplicate_dates():
    returns = make_returns()
    returns = pd.concat([returns.iloc[:10], returns.iloc[9:]])
    with pytest.raises(DataError, match=r"duplicate dates: 2021-01-15"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_unsorted_dates():
    returns = make_returns()
    returns = returns.iloc[[*range(20), 21, 20, *range(22, 120)]]
    with pytest.raises(DataError, match=r"not sorted: 2021-02-01 comes after 2021-02-02.*sort_index"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_fewer_rows_than_the_window():
    with pytest.raises(DataError, match=r"4 rows \(n_samples=4\), fewer than window=5"):
        FinVAE(window=5, verbose=0).fit(make_returns().iloc[:4])


def test_fewer_rows_than_the_window_at_transform_time(fitted):
    with pytest.raises(DataError, match=r"n_samples=3.*fewer than window=5"):
        fitted.score(make_returns().iloc[:3])


def test_price_levels_instead_of_returns():
    prices = 100.0 * np.exp(make_returns().cumsum())
    with pytest.raises(DataError, match=r"look like price levels, not returns.*prices_to_returns"):
        FinVAE(window=5, verbose=0).fit(prices)
    with pytest.raises(DataError, match="price levels"):
        FinVAE(window=5, verbose=0).fit(prices.to_numpy())


def test_zero_variance_column_stale_prices():
    returns = make_returns()
    returns["DDD"] = 0.0
    with pytest.raises(DataError, match=r"DDD have zero variance.*stale prices"):
        FinVAE(window=5, verbose=0).fit(returns)


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["AAA", "BBB", "CCC"], r"missing \['DDD'\]"),
        (["AAA", "BBB", "CCC", "DDD", "EEE"], r"unexpected \['EEE'\]"),
        (["AAA", "BBB", "EEE", "DDD"], r"missing \['CCC'\]; unexpected \['EEE'\]"),
        (["DDD", "AAA", "BBB", "CCC"], r"the same assets in another order"),
    ],
    ids=["missing", "extra", "swapped", "reordered"],
)
def test_assets_at_transform_time_differ_from_fit(fitted, columns, message):
    returns = make_returns(assets=("AAA", "BBB", "CCC", "DDD", "EEE"))[columns]
    for method in ("transform", "score", "predict", "reconstruct", "score_assets", "volatility"):
        with pytest.raises(DataError, match=r"the assets differ from those seen at fit: " + message):
            getattr(fitted, method)(returns)


def test_wrong_number_of_assets_in_an_array(fitted):
    with pytest.raises(DataError, match="X has 3 features, but FinVAE is expecting 4 features as input"):
        fitted.transform(make_returns().to_numpy()[:, :3])
    with pytest.raises(DataError, match="X has 3 features"):  # named first, before the short history
        fitted.transform(make_returns().to_numpy()[:3, :3])
    with pytest.raises(DataError, match=r"missing \['DDD'\]"):
        fitted.score(make_returns().iloc[:3, :3])


def test_one_dimensional_input():
    series_values = make_returns()["AAA"].to_numpy()
    with pytest.raises(DataError, match=r"must be 2-D \(days × assets\); got a 1-D array.*reshape\(-1, 1\)"):
        FinVAE(window=5, verbose=0).fit(series_values)
    with pytest.raises(DataError, match="must be 2-D"):
        check_returns(np.zeros((10, 2, 2)), window=5)


def test_a_series_is_one_asset():
    values, index, columns = check_returns(make_returns()["AAA"], window=5)
    assert values.shape == (120, 1) and list(columns) == ["AAA"] and len(index) == 120


def test_no_columns_sparse_and_complex_input():
    with pytest.raises(DataError, match=r"no columns \(assets\)"):
        check_returns(np.zeros((10, 0)), window=5)
    with pytest.raises(DataError, match="sparse input is not supported"):
        check_returns(sparse.csr_matrix(np.eye(10)), window=5)
    with pytest.raises(DataError, match="Complex data not supported"):
        check_returns(np.ones((10, 2)) * 1j, window=5)


def test_check_returns_keeps_float64_without_a_copy_and_never_writes():
    returns = make_returns()
    returns.iloc[5, 2] = np.nan
    copy = returns.copy()
    values, index, columns = check_returns(returns, window=5)
    assert values.dtype == np.float64 and values.shape == returns.shape
    assert index.equals(returns.index) and columns.equals(returns.columns)
    array = returns.to_numpy()
    assert np.shares_memory(check_returns(array, window=5)[0], array)  # float64 in: no copy
    pd.testing.assert_frame_equal(returns, copy)


# ------------------------------------------------------------------ one price rule


def test_check_returns_uses_the_price_rule_of_the_data_loaders(monkeypatch):
    returns = make_returns()
    check_returns(returns, window=5)  # plain returns pass
    calls = []

    def always_prices(data):
        calls.append(data)
        return True

    monkeypatch.setattr(validation, "looks_like_prices", always_prices)
    with pytest.raises(DataError, match="look like price levels"):
        check_returns(returns, window=5)
    assert len(calls) == 1 and calls[0].shape == returns.shape


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(lambda r: 100.0 * np.exp(r.cumsum()), id="prices"),
        pytest.param(lambda r: 0.02 * np.exp(r.cumsum()), id="penny-prices"),  # median below 0.5, but persistent
        pytest.param(lambda r: r, id="returns"),
        pytest.param(lambda r: r.abs() + 1e-4, id="positive-small-jumpy"),  # not persistent: not prices
        pytest.param(lambda r: 1.0 + r, id="gross-returns"),
    ],
)
def test_check_returns_rejects_exactly_what_looks_like_prices(data, request):
    frame = data(make_returns())
    assert looks_like_prices(frame) == (request.node.callspec.id in {"prices", "penny-prices", "gross-returns"})
    if looks_like_prices(frame):
        with pytest.raises(DataError, match="look like price levels"):
            check_returns(frame, window=5)
    else:
        check_returns(frame, window=5)


def test_low_priced_assets_are_caught_as_prices():
    # The loaders' rule also catches persistent positive series below 0.5 (penny stocks, JPY/USD).
    prices = 0.009 * np.exp(make_returns().cumsum())
    with pytest.raises(DataError, match="look like price levels"):
        FinVAE(window=5, verbose=0).fit(prices)


def test_a_series_fits_a_one_asset_model():
    series = make_returns()["AAA"]
    model = FinVAE(window=5, hidden=8, epochs=1, random_state=0, verbose=0).fit(series)
    assert model.n_features_in_ == 1 and list(model.asset_names_) == ["AAA"]
    scores = model.score(series)
    assert scores.index.equals(series.index) and scores.iloc[4:].notna().all()
    pd.testing.assert_series_equal(scores, model.score(series.to_frame()))


def test_missing_dates_in_the_index():
    returns = make_returns()
    dates = list(returns.index)
    dates[7] = pd.NaT
    with pytest.raises(DataError, match=r"1 missing date\(s\) \(NaT\).*row 7.*index.notna\(\)"):
        check_returns(returns.set_axis(pd.DatetimeIndex(dates)), window=5)


def test_duplicate_column_names():
    returns = make_returns().set_axis(["AAA", "AAA", "CCC", "DDD"], axis=1)
    with pytest.raises(DataError, match=r"duplicate column names: 'AAA'.*columns.duplicated\(\)"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_integer_asset_labels_are_checked_like_names():
    """Integer ids (PERMNOs) get no feature_names_in_ from scikit-learn; asset_names_ keeps them and checks them."""
    returns = make_returns().set_axis([10107, 14593, 59328, 66181], axis=1)
    model = FinVAE(window=5, hidden=8, epochs=1, random_state=0, verbose=0).fit(returns)
    assert list(model.asset_names_) == [10107, 14593, 59328, 66181] and not hasattr(model, "feature_names_in_")
    with pytest.raises(DataError, match="the same assets in another order.*model.asset_names_"):
        model.score(returns[returns.columns[::-1]])
    with pytest.raises(DataError, match=r"missing \['10107'.*unexpected \['1'"):
        model.score(returns.set_axis([1, 2, 3, 4], axis=1))
    weights = pd.Series([0.4, 0.3, 0.2, 0.1], index=returns.columns)
    np.testing.assert_allclose(model.value_at_risk(returns, weights=weights[::-1]).dropna(),
                               model.value_at_risk(returns, weights=weights).dropna())


def test_an_array_for_a_model_fitted_on_names_warns_like_scikit_learn(fitted):
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        fitted.score(make_returns().to_numpy())


def test_a_device_this_torch_cannot_use_fails_before_training():
    with pytest.raises(ValueError, match="device='gpu' is not a torch device"):
        FinVAE(window=5, device="gpu", verbose=0).fit(make_returns())
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="this torch cannot use cuda"):
            FinVAE(window=5, device="cuda", verbose=0).fit(make_returns())


def test_prices_with_a_placeholder_here_and_there_are_still_prices():
    prices = 100.0 * np.exp(make_returns().cumsum())
    prices.iloc[7, 1] = -1.0  # a vendor's "missing" code
    with pytest.raises(DataError, match="look like price levels"):
        FinVAE(window=5, verbose=0).fit(prices)


def test_text_dates_out_of_order_as_text_are_told_to_be_parsed_not_sorted():
    from finvae.datasets import prices_to_returns

    returns = make_returns(n_days=20)
    as_text = returns.set_axis(returns.index.strftime("%-m/%-d/%Y"))  # 1/9/2021 then 1/11/2021
    with pytest.raises(DataError, match=r"dates are text, compared as text.*pd.to_datetime"):
        FinVAE(window=5, verbose=0).fit(as_text)
    prices = 100.0 * np.exp(returns.cumsum()).set_axis(as_text.index)
    with pytest.raises(DataError, match=r"dates are text, compared as text.*pd.to_datetime"):
        prices_to_returns(prices)
    from finvae.backtest import anomaly_overlay, walk_forward
    from finvae.factors import explained_variance

    for call in (lambda: walk_forward(FinVAE(window=5), as_text), lambda: explained_variance(None, as_text),
                 lambda: anomaly_overlay(as_text, pd.Series(False, index=as_text.index))):
        with pytest.raises(DataError, match=r"dates are text, compared as text.*pd.to_datetime"):
            call()  # the same advice everywhere: sort_index() would scramble the history


def test_an_asset_without_data_in_the_scored_slice_is_missing_there_not_an_error(fitted):
    returns = make_returns(n_days=60, seed=1)
    returns["DDD"] = np.nan  # delisted before the slice: 3 of 4 assets observed, above min_coverage
    scores = fitted.score(returns)
    assert scores.iloc[4:].notna().all()


def test_an_asset_with_few_training_returns_is_named_in_a_warning_and_one_return_is_an_error():
    returns = make_returns()
    late = returns.copy()
    late.iloc[:-5, 2] = np.nan  # listed five days before the end of training
    with pytest.warns(UserWarning, match=r"CCC \(5 days\) have fewer than 60 returns in the training data"):
        FinVAE(window=5, epochs=1, hidden=8, verbose=0).fit(late)
    late.iloc[:-1, 2] = np.nan
    with pytest.raises(DataError, match="CCC have a single return in the training data"):
        FinVAE(window=5, epochs=1, hidden=8, verbose=0).fit(late)


def test_dates_without_any_return_get_a_warning_naming_the_first(fitted):
    returns = make_returns()
    returns.iloc[30] = np.nan  # a holiday on a business-day calendar
    with pytest.warns(UserWarning, match=r"1 date\(s\) have no return for any asset, the first 2021-02-15"):
        fitted.score(returns)
    with pytest.warns(UserWarning, match="X.dropna"):
        FinVAE(window=5, epochs=1, hidden=8, verbose=0).fit(returns)


def test_returns_in_other_units_than_at_fit_get_a_warning(fitted):
    returns = make_returns()
    with pytest.warns(UserWarning, match=r"volatility is about [\d.]+ times that of the training returns.*percent"):
        fitted.score(100.0 * returns)
    with pytest.warns(UserWarning, match=r"volatility is about 0.0\d+ times"):
        fitted.score(returns / 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.score(3.0 * returns)  # a stormy stretch is no change of units


def test_a_leading_empty_row_is_no_holiday_and_warnings_point_at_the_callers_line(fitted):
    returns = make_returns()
    returns.iloc[0] = np.nan  # the first row of prices.pct_change()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fitted.score(returns)
    with pytest.warns(UserWarning) as caught:
        fitted.predict(100.0 * make_returns())  # predict -> score -> score_parts inside finvae
    assert {Path(w.filename).name for w in caught} == {"test_validation.py"}


def test_unsorted_date_objects_are_unsorted_not_text():
    import datetime

    returns = make_returns(n_days=20).iloc[::-1]
    returns.index = [datetime.date(d.year, d.month, d.day) for d in returns.index]  # as SQL drivers give them
    with pytest.raises(DataError, match="dates are not sorted"):
        FinVAE(window=5, verbose=0).fit(returns)


def test_a_short_history_for_every_asset_is_said_so_once():
    with pytest.warns(UserWarning, match=r"the training data hold at most 50 returns per asset, fewer than 60"):
        FinVAE(window=5, epochs=1, hidden=8, verbose=0).fit(make_returns(n_days=50))


@pytest.mark.parametrize("n_assets", [1, 2, 3])
def test_fewer_than_three_assets_are_warned_about_the_residual_part(n_assets):
    returns = make_returns(n_days=120).iloc[:, :n_assets]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        FinVAE(window=5, epochs=1, hidden=8, verbose=0, random_state=0).fit(returns)
    said = [str(w.message) for w in caught if "residual part" in str(w.message)]
    if n_assets < 3:
        assert len(said) == 1 and said[0].startswith(f"{n_assets} asset(s): the score's residual part")
        assert "needs 3 or more" in said[0]
    else:
        assert said == []


def test_a_sparse_universe_is_warned_about_at_fit():
    returns = make_returns(n_days=200, assets=("A", "B", "C", "D", "E", "F"))
    returns.iloc[:150, 2:] = np.nan  # four of six assets trade only at the end: few dates reach min_coverage
    with pytest.warns(UserWarning, match=r"only 50 of the 196 training dates with a full window have at least 50%"):
        FinVAE(window=5, epochs=1, hidden=8, verbose=0, random_state=0).fit(returns)
