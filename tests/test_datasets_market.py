"""Market data: the bundled sample, prices to returns, load_returns, and downloads through a yfinance stand-in."""

from __future__ import annotations

import io
import logging
import socket
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import finvae.datasets._market as market
from finvae import DataError, FinVAE
from finvae.datasets import (
    download_prices,
    load_returns,
    load_sp500_sample,
    looks_like_prices,
    prices_to_returns,
)

DATES = pd.bdate_range("2020-01-01", periods=30)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test caches under its own tmp folder (through the env var), never in the user's cache."""
    monkeypatch.setenv(market.CACHE_ENV_VAR, str(tmp_path / "cache"))
    sleeps: list[float] = []
    monkeypatch.setattr(market, "_sleep", sleeps.append)
    return sleeps


# --------------------------------------------------------------------------- a stand-in for yfinance.download


def yf_frame(prices: dict[str, pd.Series | None], *, auto_adjust: bool = True) -> pd.DataFrame:
    """A frame laid out as yfinance 1.x ``download`` returns it (group_by='column', multi_level_index=True).

    Columns are a MultiIndex (Price, Ticker), sorted by field. A ticker given as None failed:
    yfinance puts ``utils.empty_df()`` in its place, all-NaN Open, High, Low, Close, Adj Close, Volume.
    With ``auto_adjust=False``, ``Close`` is unadjusted and ``Adj Close`` is adjusted.
    """
    good = [s for s in prices.values() if s is not None]
    index = good[0].index if good else pd.DatetimeIndex([], dtype="datetime64[s]")
    for s in good[1:]:
        index = index.union(s.index)
    index = pd.DatetimeIndex(index, name="Date")
    parts = {}
    for ticker, series in prices.items():
        if series is None:
            part = pd.DataFrame(np.nan, index=index,
                                columns=["Open", "High", "Low", "Close", "Adj Close", "Volume"])
        else:
            close = series.reindex(index)
            fields = {"Close": close, "High": close * 1.01, "Low": close * 0.99, "Open": close, "Volume": 1e6}
            if not auto_adjust:
                fields = {**fields, "Close": close * 1.5, "Adj Close": close}
            part = pd.DataFrame(fields, index=index)
        parts[ticker] = part
    frame = pd.concat(parts, axis=1, names=["Ticker", "Price"])
    frame.columns = frame.columns.swaplevel(0, 1)
    return frame.sort_index(axis=1, level=0)


def price_path(start: float, n: int = 30, seed: int = 0, index=DATES) -> pd.Series:
    rng = np.random.default_rng(seed)
    return pd.Series(start * np.exp(np.cumsum(rng.normal(0, 0.01, n))), index=index[:n])


class FakeYahoo:
    """Replaces ``_yf_download``: answers per ticker from ``answers`` and records each call.

    An answer is a Series (prices), None (yfinance's all-NaN columns for a failed ticker),
    a DataFrame (returned as is), an exception (raised), or a list of those, used in turn.
    """

    def __init__(self, answers):
        self.answers = {k: (list(v) if isinstance(v, list) else v) for k, v in answers.items()}
        self.calls: list[tuple] = []

    def __call__(self, tickers, start, end, interval):
        self.calls.append((tuple(tickers), start, end, interval))
        (ticker,) = tickers
        answer = self.answers[ticker]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, pd.DataFrame):
            return answer
        return yf_frame({ticker: answer})

    def tickers_called(self):
        return [call[0][0] for call in self.calls]


@pytest.fixture
def fake(monkeypatch):
    def install(**answers):
        stand_in = FakeYahoo(answers)
        monkeypatch.setattr(market, "_yf_download", stand_in)
        return stand_in

    return install


def test_yf_frame_matches_yfinance_layout():
    # The stand-in's layout is the one yfinance 1.x builds in multi.download: (Price, Ticker), fields sorted.
    frame = yf_frame({"AAPL": price_path(100), "XYZ": None})
    assert frame.columns.names == ["Price", "Ticker"]
    assert list(frame.columns.get_level_values(0).unique()) == ["Adj Close", "Close", "High", "Low", "Open", "Volume"]
    assert frame[("Adj Close", "XYZ")].isna().all() and frame[("Close", "AAPL")].notna().all()


# --------------------------------------------------------------------------- the bundled sample


def test_sample_is_real_and_offline():
    prices = load_sp500_sample()
    assert prices.shape == (8313, 20)
    assert isinstance(prices.index, pd.DatetimeIndex) and prices.index.is_monotonic_increasing
    assert (str(prices.index[0].date()), str(prices.index[-1].date())) == ("1990-01-02", "2022-12-28")
    assert list(prices.columns[:3]) == ["AAPL", "AMD", "BAC"] and "XOM" in prices.columns
    assert prices.dtypes.eq(np.float64).all()
    # Real adjusted closes: AAPL's split-adjusted 2022-12-28 close.
    assert prices.loc["2022-12-28", "AAPL"] == pytest.approx(125.674)


def test_sample_returns_are_over_99_percent_finite_and_flag_rrc_stale_quotes():
    with pytest.warns(UserWarning, match=r"Stale prices.*RRC unchanged for 68 days from 1990-01-02"):
        returns = prices_to_returns(load_sp500_sample())
    assert returns.shape == (8312, 20)
    assert np.isfinite(returns.to_numpy()).mean() > 0.99
    assert returns.abs().median().max() < 0.05  # daily log returns, not prices


# --------------------------------------------------------------------------- prices to returns


def test_missing_prices_stay_missing():
    nan = np.nan
    prices = pd.DataFrame(
        {
            "late": [nan, nan, 10.0, 11.0, 12.1],     # lists on day 3
            "gap": [100.0, 110.0, nan, 121.0, 121.0],  # holiday on day 3
            "gone": [50.0, 55.0, 60.5, nan, nan],      # delisted after day 3
        },
        index=pd.date_range("2024-01-01", periods=5),
    )
    before = prices.copy()
    simple = prices_to_returns(prices, "simple", stale_days=None)
    pd.testing.assert_frame_equal(prices, before)  # the caller's frame is untouched
    assert list(simple.index) == list(prices.index[1:])
    np.testing.assert_allclose(simple["late"], [nan, nan, 0.1, 0.1])
    np.testing.assert_allclose(simple["gap"], [0.1, nan, 0.1, 0.0])  # the move over the gap is kept whole
    np.testing.assert_allclose(simple["gone"], [0.1, 0.1, nan, nan])
    log = prices_to_returns(prices, stale_days=None)
    np.testing.assert_allclose(log, np.log1p(simple))


def test_series_in_series_out():
    prices = pd.Series([1.0, 2.0, 4.0], index=pd.date_range("2024-01-01", periods=3), name="X")
    returns = prices_to_returns(prices, "simple")
    assert isinstance(returns, pd.Series) and returns.name == "X"
    assert returns.tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("prices", "match"),
    [
        (pd.DataFrame({"A": [1.0, 0.0, 2.0], "B": [1.0, 1.0, -3.0]}, index=pd.date_range("2024-01-01", periods=3)),
         r"prices must be positive, but 2 value\(s\) are zero or negative: A on 2024-01-02 \(0\), "
         r"B on 2024-01-03 \(-3\)"),
        (pd.DataFrame({"A": [1.0, 2.0, 3.0]}, index=pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-02"])),
         r"duplicate dates: 2024-01-02.*index.duplicated"),
        (pd.DataFrame({"A": [1.0, 2.0, 3.0]}, index=pd.to_datetime(["2024-01-01", "2024-01-03", "2024-01-02"])),
         r"not sorted: row 2 \(2024-01-02\) comes after row 1 \(2024-01-03\).*sort_index"),
        (pd.DataFrame({"A": [1.0, 2.0], "name": ["x", "y"]}, index=pd.date_range("2024-01-01", periods=2)),
         r"must be numeric, but column\(s\) 'name' are not"),
        (pd.DataFrame({"A": [1.0, np.inf]}, index=pd.date_range("2024-01-01", periods=2)),
         r"infinite value\(s\): A on 2024-01-02"),
        (pd.DataFrame({"A": [1.0]}, index=pd.date_range("2024-01-01", periods=1)),
         r"1 row\(s\); returns need at least 2 dates"),
        (pd.DataFrame([[1.0, 2.0], [1.5, 2.5]], columns=["A", "A"]),
         r"duplicate columns: 'A'"),
    ],
    ids=["non-positive", "duplicate-dates", "unsorted", "non-numeric", "infinite", "one-row", "duplicate-columns"],
)
def test_bad_prices_raise_data_error_naming_the_rows(prices, match):
    with pytest.raises(DataError, match=match):
        prices_to_returns(prices)


def test_bad_arguments():
    prices = load_sp500_sample().iloc[:5]
    with pytest.raises(ValueError, match="kind must be 'log' or 'simple', got 'pct'"):
        prices_to_returns(prices, "pct")
    with pytest.raises(ValueError, match="stale_days must be a positive integer or None"):
        prices_to_returns(prices, stale_days=0)
    with pytest.raises(TypeError, match="must be a pandas DataFrame.*got ndarray"):
        prices_to_returns(prices.to_numpy())


def test_stale_quotes_warn_with_asset_and_dates():
    prices = pd.DataFrame({"OK": price_path(100), "FLAT": price_path(50, seed=1)})
    prices.iloc[5:17, 1] = 42.0  # 12 equal prices: unchanged on 11 days in a row
    with pytest.warns(UserWarning, match=r"FLAT unchanged for 11 days from 2020-01-08 to 2020-01-23") as caught:
        prices_to_returns(prices)
    assert "OK" not in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices_to_returns(prices, stale_days=12)  # shorter than the threshold: silent
        prices_to_returns(prices, stale_days=None)


# --------------------------------------------------------------------------- prices or returns?


def test_looks_like_prices_rule():
    prices = load_sp500_sample()
    assert looks_like_prices(prices) and looks_like_prices(prices["AAPL"])
    assert not looks_like_prices(prices_to_returns(prices, stale_days=None))
    # Low-priced assets (FX rate like JPY/USD ≈ 0.007) are prices by persistence, not by level.
    assert looks_like_prices(price_path(0.007).to_numpy())
    assert not looks_like_prices(np.array([0.01, 0.02, 0.005, 0.03]))  # positive but jumpy: returns
    assert not looks_like_prices(pd.DataFrame({"A": [np.nan, 3.0]}))  # too little to tell
    assert looks_like_prices(pd.DataFrame({"name": ["a", "b", "c"], "A": [10.0, 10.1, 10.2]}))


@settings(max_examples=40, deadline=None)
@given(sigma=st.floats(0.001, 0.08), level=st.floats(0.01, 5000.0), seed=st.integers(0, 2**16))
def test_looks_like_prices_on_random_paths(sigma, level, seed):
    rng = np.random.default_rng(seed)
    returns = rng.normal(0.0003, sigma, size=(250, 3))
    assert not looks_like_prices(returns)
    assert looks_like_prices(level * np.exp(np.cumsum(returns, axis=0)))


# --------------------------------------------------------------------------- load_returns


def test_load_returns_from_prices_csv_says_what_it_assumed(tmp_path):
    prices = load_sp500_sample().iloc[:300, :4]
    path = tmp_path / "prices.csv"
    prices.to_csv(path)
    with pytest.warns(UserWarning, match=r"'.*prices.csv' looks like prices \(every value is positive.*log returns"):
        returns = load_returns(path)
    pd.testing.assert_frame_equal(returns, prices_to_returns(prices), check_freq=False, check_names=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # naming what the file holds silences the guess
        simple = load_returns(path, assume="prices", kind="simple")
    np.testing.assert_allclose(simple, np.expm1(returns))


def test_load_returns_from_returns_buffer_with_unnamed_date_column():
    returns = prices_to_returns(load_sp500_sample().iloc[:200, :3], stale_days=None)
    returns.index.name = None  # to_csv writes an unnamed first column
    text = returns.to_csv()
    with pytest.warns(UserWarning, match=r"the buffer looks like returns .*used them as they are"):
        loaded = load_returns(io.StringIO(text))
    np.testing.assert_array_equal(loaded.to_numpy(), returns.to_numpy())
    assert isinstance(loaded.index, pd.DatetimeIndex) and loaded.index.equals(returns.index)


def test_load_returns_reads_a_date_column_anywhere_and_gzip(tmp_path):
    frame = pd.DataFrame({"A": [0.01, -0.02, 0.005], "date": ["2024-01-02", "2024-01-03", "2024-01-04"]})
    path = tmp_path / "r.csv.gz"
    frame.to_csv(path, index=False)
    loaded = load_returns(path, assume="returns")
    assert list(loaded.columns) == ["A"] and str(loaded.index[0].date()) == "2024-01-02"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("A,B\n1.0,2.0\n1.1,2.1\n", r"has no column of dates\. Name it 'Date'"),
        ("Date,A\n2024-01-02,1.0\nnot a date,1.1\n", r"holds values that are not dates: row 1 \('not a date'\)"),
        ("Date,A\n2024-01-03,1.0\n2024-01-02,1.1\n", r"dates are not sorted: row 1 \(2024-01-02\)"),
        ("Date,A\n2024-01-02,1.0\n2024-01-03,0\n", r"prices must be positive.*A on 2024-01-03"),
        ("Date,A\n2024-01-02,1.0\n2024-01-03,x\n", r"must be numeric, but column\(s\) 'A' are not"),
        ("", r"Could not read the buffer as CSV"),
    ],
    ids=["no-dates", "bad-date", "unsorted", "non-positive", "text-in-numbers", "empty"],
)
def test_load_returns_errors_name_the_problem(text, match):
    with pytest.raises(DataError, match=match):
        load_returns(io.StringIO(text), assume="prices")


def test_load_returns_reads_spreadsheet_exports_and_drops_empty_columns_and_rows():
    """Semicolons with decimal commas, quoted thousands separators, a trailing comma, calendar days."""
    prices = load_sp500_sample().iloc[:40, :3]
    expected = prices_to_returns(prices, stale_days=None)
    texts = {
        "semicolon, decimal comma": prices.to_csv(sep=";", decimal=","),
        "semicolon": prices.to_csv(sep=";"),
        "thousands": (prices * 100).map(lambda x: f"{x:,.4f}").to_csv(),
        "trailing comma": "\n".join(line + "," for line in prices.to_csv().splitlines()),
        # a European export: dotted dates, points between thousands, decimal commas
        "european thousands": (prices * 100).map(lambda x: f"{x:,.4f}".replace(",", " ").replace(".", ",")
                                                 .replace(" ", ".")).to_csv(sep=";", date_format="%d.%m.%Y"),
    }
    for name, text in texts.items():
        loaded = load_returns(io.StringIO(text), assume="prices")
        scale = 100 if "thousands" in name else 1
        np.testing.assert_allclose(loaded.to_numpy(), prices_to_returns(prices * scale, stale_days=None).to_numpy(),
                                   err_msg=name)
        assert list(loaded.columns) == list(prices.columns), name
    calendar = prices.asfreq("D")  # weekends as empty rows
    with pytest.warns(UserWarning, match=r"date\(s\) without a value for any asset .* weekends or holidays"):
        loaded = load_returns(io.StringIO(calendar.to_csv()), assume="prices")
    pd.testing.assert_frame_equal(loaded, expected, check_freq=False, check_names=False)


def test_european_thousands_are_read_across_the_thousand():
    text = "Datum;A;B\n02.01.2024;999,50;10,00\n03.01.2024;1.000,50;10,10\n04.01.2024;1.002,00;10,20\n"
    loaded = load_returns(io.StringIO(text), assume="prices")
    np.testing.assert_allclose(loaded["A"].to_numpy(), np.log([1000.5 / 999.5, 1002.0 / 1000.5]))
    assert [str(d.date()) for d in loaded.index] == ["2024-01-03", "2024-01-04"]
    whole = "Datum;A;B\n02.01.2024;999;1.439,10\n03.01.2024;1.000;1.440,00\n04.01.2024;1.002;1.441,00\n"
    np.testing.assert_allclose(load_returns(io.StringIO(whole), assume="prices")["A"].to_numpy(),
                               np.log([1000 / 999, 1002 / 1000]))  # 1.000 is a thousand here, not 1.0
    late = "Date;A;B\n02.01.2024;1,5;\n03.01.2024;1,6;2,5\n04.01.2024;1,7;2,6\n"  # more commas below the first row
    np.testing.assert_allclose(load_returns(io.StringIO(late), assume="prices")["A"].to_numpy(),
                               np.log([1.6 / 1.5, 1.7 / 1.6]))
    empty = "Date;A;B;C\n02.01.2024;1.234,5;;40,5\n03.01.2024;1.235,5;;40,6\n04.01.2024;1.236,5;;40,7\n"
    assert load_returns(io.StringIO(empty), assume="prices")["B"].isna().all()  # an empty column, as in any file
    gap = "Datum;A;B;C\n02.01.2024;1.439,10;10,0;5,0\n03.01.2024;-;10,1;5,1\n04.01.2024;1.441,00;10,2;5,2\n"
    with pytest.raises(DataError, match=r"e\.g\. '-' on 2024-01-03, 1 such cell\(s\) in 'A'"):
        load_returns(io.StringIO(gap), assume="prices")


def test_stray_text_in_a_column_of_numbers_is_named_with_its_cell():
    prices = load_sp500_sample().iloc[:40, :3].astype(object)
    prices.iloc[5, 1] = "-"
    with pytest.raises(DataError, match=r"e\.g\. '-' on 1990-01-09, 1 such cell\(s\) in 'AMD'\).*pd\.to_numeric"):
        load_returns(io.StringIO(prices.to_csv()), assume="prices")


def test_load_returns_reads_dates_pandas_would_misread():
    values = "\n".join(f"{d},{100 + i}" for i, d in enumerate(
        ["01/11/2022", "02/11/2022", "03/11/2022", "04/11/2022", "07/11/2022"]))
    with pytest.warns(UserWarning, match=r"read day first \(dd/mm/yyyy\)"):
        day_first = load_returns(io.StringIO("Date,A\n" + values), assume="prices")
    assert [str(d.date()) for d in day_first.index] == ["2022-11-02", "2022-11-03", "2022-11-04", "2022-11-07"]
    summer = "Date,A\n2022-11-03 00:00:00-04:00,100\n2022-11-04 00:00:00-04:00,101\n2022-11-07 00:00:00-05:00,102\n"
    with pytest.warns(UserWarning, match="more than one UTC offset"):
        local = load_returns(io.StringIO(summer), assume="prices")
    assert [str(d) for d in local.index] == ["2022-11-04 00:00:00", "2022-11-07 00:00:00"]
    with pytest.raises(DataError, match=r"mixes date formats \('10/03/2022' in row 0, '2022-10-04' in row 1\)"):
        load_returns(io.StringIO("Date,A\n10/03/2022,100\n2022-10-04,101\n"), assume="prices")


def test_load_returns_reads_one_utc_offset_dotted_dates_and_yyyymmdd_numbers():
    utc = "Date,A\n2022-11-03 00:00:00+00:00,100\n2022-11-04 00:00:00+00:00,101\n2022-11-07 00:00:00+00:00,102\n"
    loaded = load_returns(io.StringIO(utc), assume="prices")  # what to_csv writes for a UTC index
    assert loaded.index.tz is None and [str(d.date()) for d in loaded.index] == ["2022-11-04", "2022-11-07"]
    dotted = "Datum;A\n02.01.2015;24,53\n05.01.2015;24,60\n13.01.2015;24,70\n14.01.2015;24,75\n"
    loaded = load_returns(io.StringIO(dotted), assume="prices")  # a European spreadsheet export
    assert [str(d.date()) for d in loaded.index] == ["2015-01-05", "2015-01-13", "2015-01-14"]
    numbers = "Date,A\n20150102,24.53\n20150105,24.60\n20150106,24.70\n"
    loaded = load_returns(io.StringIO(numbers), assume="prices")  # CRSP and SQL exports
    assert [str(d.date()) for d in loaded.index] == ["2015-01-05", "2015-01-06"]
    with pytest.raises(DataError, match=r"column 'Date' has missing dates: row 1"):
        load_returns(io.StringIO("Date,A\n20150102,24.53\n,24.60\n20150106,24.70\n"), assume="prices")
    with pytest.raises(DataError, match=r"column 'Date' holds numbers, not dates \(such as 42009; Excel serial"):
        load_returns(io.StringIO("Date,A\n42009,24.53\n42010,24.60\n"), assume="prices")


def test_price_fields_are_not_taken_for_assets():
    prices = load_sp500_sample().iloc[:30, :2]
    fields = pd.concat({"Close": prices, "High": prices * 1.01, "Volume": prices * 1e6}, axis=1)
    fields.columns.names = ["Price", "Ticker"]  # yfinance.download's layout
    with pytest.raises(DataError, match=r"columns of price fields \(close, high, volume\).*xs\('Close', axis=1, "
                                        r"level='Price'\)"):
        prices_to_returns(fields)
    returns = prices_to_returns(prices)
    with pytest.raises(DataError, match="columns of price fields"):
        FinVAE(verbose=0).fit(pd.concat({"Close": returns, "Open": returns, "Volume": returns}, axis=1))
    assert prices_to_returns(prices.set_axis(["LOW", "OPEN"], axis=1)).shape == returns.shape  # Lowe's, Opendoor
    tercile_prices = pd.concat({"Low": prices, "Mid": prices, "High": prices}, axis=1)  # portfolios, not fields
    assert prices_to_returns(tercile_prices).shape == (len(returns), 6)
    one = prices.iloc[:, 0]
    flat = pd.DataFrame({"Open": one, "High": one, "Low": one, "Close": one, "Adj Close": one, "Volume": one * 1e6})
    with pytest.raises(DataError, match=r"not one column per asset.*prices\[\['Adj Close'\]\]"):
        load_returns(io.StringIO(flat.to_csv()))
    header_rows = "Price,Close,Close\nTicker,AAPL,MSFT\nDate,,\n2024-01-02,185.6,370.9\n2024-01-03,184.2,370.6\n"
    with pytest.raises(DataError, match=r"is a yfinance download saved with to_csv.*header=\[0, 1\]"):
        load_returns(io.StringIO(header_rows))


def test_load_returns_refuses_returns_in_percent_and_prices_with_zeros():
    returns = prices_to_returns(load_sp500_sample().iloc[:100, :3], stale_days=None) * 100
    with pytest.raises(DataError, match=r"are they in percent\? Divide them by 100"):
        load_returns(io.StringIO(returns.to_csv()), assume="returns")
    dead = load_sp500_sample().iloc[:200, :3].copy()
    dead.iloc[100:, 1] = 0.0  # quoted at 0 once it died: levels, not returns, whatever assume says
    for assume in ("auto", "returns"):
        with pytest.raises(DataError, match=r"looks like prices .* 100 of them are zero or negative"):
            load_returns(io.StringIO(dead.to_csv()), assume=assume)


def test_load_returns_parquet_without_pyarrow_says_what_to_install(tmp_path):
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        path = tmp_path / "r.parquet"
        path.write_bytes(b"PAR1 not really")
        with pytest.raises(DataError, match=r"parquet file .* needs pyarrow.*pip install pyarrow"):
            load_returns(path)
        with pytest.raises(DataError, match=r"needs pyarrow"):
            load_returns(io.BytesIO(b"PAR1 not really"))  # detected by its magic bytes
    else:
        returns = prices_to_returns(load_sp500_sample().iloc[:50, :2], stale_days=None)
        returns.to_parquet(tmp_path / "r.parquet")
        pd.testing.assert_frame_equal(load_returns(tmp_path / "r.parquet", assume="returns"), returns)


def test_load_returns_bad_arguments():
    with pytest.raises(ValueError, match="assume must be 'auto', 'prices' or 'returns'"):
        load_returns(io.StringIO("Date,A\n2024-01-02,1.0\n"), assume="levels")


# --------------------------------------------------------------------------- download_prices through the stand-in


def test_download_columns_in_order_asked_and_union_of_dates(fake, tmp_path):
    late = price_path(20, n=20, seed=2, index=DATES[10:])
    yahoo = fake(MSFT=price_path(300, seed=1), AAPL=price_path(100), NEW=late)
    prices = download_prices(["msft", "AAPL", "NEW", "MSFT"], "2020-01-01", "2020-03-01")
    assert list(prices.columns) == ["MSFT", "AAPL", "NEW"]  # order asked, upper-cased, repeat dropped
    assert prices.index.name == "Date" and prices.index.equals(pd.DatetimeIndex(DATES, name="Date"))
    assert prices["NEW"].iloc[:10].isna().all() and prices["NEW"].iloc[10:].notna().all()  # late listing: NaN
    np.testing.assert_allclose(prices["AAPL"], price_path(100))
    assert yahoo.calls[0] == (("MSFT",), "2020-01-01", "2020-03-01", "1d")


def test_cache_serves_repeats_and_refresh_downloads_again(fake, tmp_path):
    yahoo = fake(AAPL=price_path(100), MSFT=price_path(300, seed=1))
    first = download_prices(["AAPL", "MSFT"], start="2020-01-01")
    assert yahoo.tickers_called() == ["AAPL", "MSFT"]
    assert sorted(p.name for p in (tmp_path / "cache" / "prices").iterdir())[0].startswith("AAPL_1d_2020-01-01_asof-")

    again = download_prices(["MSFT", "AAPL"], start="2020-01-01")  # any order, any subset: per ticker
    assert yahoo.tickers_called() == ["AAPL", "MSFT"]  # no new call
    pd.testing.assert_frame_equal(again, first[["MSFT", "AAPL"]])  # exact float round trip

    download_prices(["AAPL"], start="2020-01-01", refresh=True)
    assert yahoo.tickers_called() == ["AAPL", "MSFT", "AAPL"]
    download_prices(["AAPL"], start="2020-01-02")  # another range is another request
    assert len(yahoo.calls) == 4


def test_cache_dir_argument_beats_the_environment(fake, tmp_path):
    fake(AAPL=price_path(100))
    download_prices("AAPL", cache_dir=tmp_path / "mine")
    assert list((tmp_path / "mine" / "prices").glob("AAPL_1d_first_asof-*.csv"))
    assert not (tmp_path / "cache").exists()


def test_partial_download_warns_and_names_the_missing(fake):
    fake(AAPL=price_path(100), XYZ=None, GONE=pd.DataFrame())
    with pytest.warns(UserWarning, match=r"No prices for 2 of 3 tickers, left out of the result: XYZ: .*GONE: "
                                         r".*Returned: AAPL"):
        prices = download_prices("AAPL XYZ,GONE", start="2020-01-01")
    assert list(prices.columns) == ["AAPL"]


def test_unknown_ticker_is_an_error_naming_it_and_yfinance_reason(fake):
    from yfinance.exceptions import YFTzMissingError

    fake(XYZ=YFTzMissingError("XYZ"))
    with pytest.raises(DataError, match=r"No prices for ticker 'XYZ' .*possibly delisted; no timezone found.*"
                                        r"unknown or delisted.*load_sp500_sample"):
        download_prices("XYZ", start="2020-01-01")


def test_range_without_trading_days_is_an_error(fake):
    fake(AAPL=yf_frame({"AAPL": None}).iloc[:0], MSFT=None)  # the empty frames yfinance gives
    with pytest.raises(DataError, match=r"No prices for any of the tickers AAPL, MSFT from 2020-01-04 to "
                                        r"2020-01-06 \(1d\).*range holds no trading days"):
        download_prices(["AAPL", "MSFT"], "2020-01-04", "2020-01-06")


def test_empty_date_range_is_an_error_before_any_download(fake):
    yahoo = fake(AAPL=price_path(100))
    with pytest.raises(DataError, match=r"Empty date range: start=2020-02-01 is not before end=2020-01-01"):
        download_prices("AAPL", "2020-02-01", "2020-01-01")
    assert yahoo.calls == []


def test_rate_limit_is_retried_with_backoff(fake, _isolated_cache):
    from yfinance.exceptions import YFRateLimitError

    yahoo = fake(AAPL=[YFRateLimitError(), YFRateLimitError(), price_path(100)])
    prices = download_prices("AAPL")
    assert _isolated_cache == [2.0, 4.0] and len(yahoo.calls) == 3
    assert prices["AAPL"].notna().all()


def test_persistent_rate_limit_is_an_error_that_says_to_wait(fake, _isolated_cache):
    from yfinance.exceptions import YFRateLimitError

    fake(AAPL=price_path(100), MSFT=YFRateLimitError())
    with pytest.raises(DataError, match=r"rate-limiting.*MSFT still failed after 4 retries over 30 s\. Wait a few "
                                        r"minutes.*already downloaded \(AAPL\) are cached"):
        download_prices(["AAPL", "MSFT"])
    assert _isolated_cache == [2.0, 4.0, 8.0, 16.0]


def test_no_network_is_an_error_suggesting_the_sample_and_cache(fake):
    fake(AAPL=ConnectionError("DNSError: Could not resolve host: query2.finance.yahoo.com"))
    with pytest.raises(DataError, match=r"Could not reach Yahoo Finance to download AAPL.*Could not resolve host.*"
                                        r"load_sp500_sample\(\).*cached in .*prices"):
        download_prices("AAPL")


def test_unexpected_yfinance_failure_names_ticker_and_error(fake):
    fake(AAPL=KeyError("chart"))
    with pytest.raises(DataError, match=r"yfinance failed while downloading AAPL: KeyError: 'chart'.*pip install -U"):
        download_prices("AAPL")


def test_adjusted_close_in_either_layout_and_tz_aware_index(fake):
    aware = price_path(100)
    aware.index = aware.index.tz_localize("America/New_York")
    fake(RAW=yf_frame({"RAW": price_path(100)}, auto_adjust=False), TZ=aware)
    prices = download_prices(["RAW", "TZ"])
    np.testing.assert_allclose(prices["RAW"], price_path(100))  # Adj Close, not the unadjusted Close
    assert prices.index.tz is None and prices["TZ"].notna().all()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"tickers": []}, DataError, r"No tickers given"),
        ({"tickers": ["AAPL", ""]}, DataError, r"Tickers must be non-empty strings"),
        ({"tickers": "AAPL", "start": "yesterday-ish"}, DataError, r"start='yesterday-ish' is not a date"),
        ({"tickers": "AAPL", "interval": "7d"}, ValueError, r"interval='7d' is not one Yahoo Finance serves"),
    ],
    ids=["no-tickers", "empty-ticker", "bad-date", "bad-interval"],
)
def test_bad_requests(fake, kwargs, error, match):
    fake(AAPL=price_path(100))
    with pytest.raises(error, match=match):
        download_prices(**kwargs)


def test_damaged_cache_file_is_downloaded_again(fake, tmp_path):
    yahoo = fake(AAPL=price_path(100))
    download_prices("AAPL", "2020-01-01", "2020-03-01")
    (cached,) = (tmp_path / "cache" / "prices").iterdir()
    cached.write_text("garbage")
    prices = download_prices("AAPL", "2020-01-01", "2020-03-01")
    assert len(yahoo.calls) == 2 and prices["AAPL"].notna().all()


# --------------------------------------------------------------------------- the real _yf_download, network-free


def _yfinance_that_logs(message: str, monkeypatch):
    """Replace yfinance.download by one that fails the way 1.x does: log the error, return an empty frame."""
    import yfinance

    def download(tickers, **kwargs):
        logging.getLogger("yfinance").error(message)
        return yf_frame({t: None for t in tickers}).iloc[:0]

    monkeypatch.setattr(yfinance, "download", download)


def test_real_wrapper_turns_logged_rate_limit_into_the_exception(monkeypatch):
    from yfinance.exceptions import YFRateLimitError

    _yfinance_that_logs("['AAPL']: YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')",
                        monkeypatch)
    with pytest.raises(YFRateLimitError):
        market._yf_download(["AAPL"], "2020-01-01", None, "1d")


def test_real_wrapper_turns_logged_dns_failure_into_connection_error(monkeypatch):
    _yfinance_that_logs("['AAPL']: DNSError('Failed to perform, curl: (6) Could not resolve host: "
                        "query2.finance.yahoo.com. See https://curl.se/libcurl/c/libcurl-errors.html first')",
                        monkeypatch)
    with pytest.raises(ConnectionError, match=r"^DNSError: Failed to perform, curl: \(6\) Could not resolve host"):
        market._yf_download(["AAPL"], None, None, "1d")


def test_real_wrapper_passes_the_reason_for_a_bad_ticker(monkeypatch):
    _yfinance_that_logs("['XYZ']: possibly delisted; no timezone found", monkeypatch)
    frame = market._yf_download(["XYZ"], None, None, "1d")
    assert frame.attrs[market._REASON_ATTR] == "['XYZ']: possibly delisted; no timezone found"


# --------------------------------------------------------------------------- the real thing, when online


def _yahoo_reachable(timeout: float = 2.0) -> bool:
    """Connect to Yahoo's API host within ``timeout`` seconds; DNS runs in a thread so it cannot hang us."""
    result: list[bool] = []

    def probe():
        try:
            with socket.create_connection(("query2.finance.yahoo.com", 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def test_real_yfinance_download(tmp_path):
    if not _yahoo_reachable():
        pytest.skip("no network to query2.finance.yahoo.com")
    try:
        prices = download_prices(["AAPL", "MSFT"], "2020-01-01", "2020-02-01", cache_dir=tmp_path)
    except DataError as exc:
        if "rate-limiting" in str(exc):
            pytest.skip(f"Yahoo is rate-limiting: {exc}")
        raise
    assert list(prices.columns) == ["AAPL", "MSFT"]
    assert 18 <= len(prices) <= 22 and prices.notna().all().all()
    assert str(prices.index[0].date()) == "2020-01-02"


def test_more_price_field_layouts_are_refused_and_named():
    prices = load_sp500_sample().iloc[:30, :2]
    one = prices.iloc[:, 0]
    history = pd.DataFrame({"Open": one, "High": one, "Low": one, "Close": one, "Volume": one * 1e6,
                            "Dividends": 0.0, "Stock Splits": 0.0})  # yfinance's Ticker.history()
    with pytest.raises(DataError, match=r"price fields .*prices\[\['Close'\]\]"):
        prices_to_returns(history)
    no_close = history[["High", "Low", "Volume"]]
    with pytest.raises(DataError, match=r"price fields \(high, low, volume\)"):
        prices_to_returns(no_close)
    close_volume = pd.concat({"Close": prices, "Volume": prices * 1e6}, axis=1)
    with pytest.raises(DataError, match="price fields"):
        prices_to_returns(close_volume)
    with pytest.raises(DataError, match=r"has no column of dates \(its first column, 'Unnamed: 0', holds numbers such "
                                        r"as 42009: Excel serial"):
        load_returns(io.StringIO(",A\n42009,24.53\n42010,24.60\n"), assume="prices")


def test_days_on_which_every_price_is_unchanged_are_warned_about_as_filled_in():
    dates = pd.bdate_range("2024-01-01", periods=30)
    rng = np.random.default_rng(0)
    prices = pd.DataFrame(100 * np.exp(np.cumsum(rng.normal(0, 0.01, (30, 4)), axis=0)), index=dates,
                          columns=list("ABCD"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices_to_returns(prices)  # real moves: no warning
    calendar = prices.reindex(pd.date_range(dates[0], dates[-1])).ffill()  # weekends filled with Friday's prices
    with pytest.warns(UserWarning, match=r"10 date\(s\) on which every asset's price is unchanged \(e\.g\. 2024-01-06, "
                                         r"10 of them weekend days\)"):
        prices_to_returns(calendar)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prices_to_returns(calendar, stale_days=None)  # the stale-price switch turns this check off too
    with warnings.catch_warnings(record=True) as caught:  # real quotes in eighths coincide on a few days: no warning
        warnings.simplefilter("always")
        prices_to_returns(load_sp500_sample()[["AMD", "PEP", "RRC"]])
    assert not [w for w in caught if "every asset's price is unchanged" in str(w.message)]
