"""finvae.backtest: walk-forward without look-ahead, n_jobs equivalence, overlay timing, hold, costs, errors."""

from __future__ import annotations

import warnings

import joblib
import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

from finvae import DataError
from finvae.backtest import OverlayResult, anomaly_overlay, walk_forward

matplotlib.use("Agg")


class TrailingVolScorer(BaseEstimator):
    """A fast, causal stand-in for FinVAE.

    Score of date t: |equal-weight return of t| / std of the equal-weight
    return over the ``lookback`` days before t. ``threshold_``: the
    ``1 - contamination`` quantile of the training scores, times a seeded
    random factor in [1, 1 + jitter) so that the seed matters.
    """

    def __init__(self, lookback=20, contamination=0.05, jitter=0.1, random_state=None):
        self.lookback = lookback
        self.contamination = contamination
        self.jitter = jitter
        self.random_state = random_state

    def _scores(self, X):
        market = X.mean(axis=1)
        return market.abs() / market.rolling(self.lookback).std().shift(1)

    def fit(self, X, y=None):
        rng = np.random.default_rng(self.random_state)
        self.threshold_ = float(np.nanquantile(self._scores(X), 1 - self.contamination)) * (
            1 + self.jitter * rng.random()
        )
        self.n_train_ = len(X)
        return self

    def score(self, X):
        check_is_fitted(self)
        return self._scores(X)

    def predict(self, X):
        return self.score(X) > self.threshold_


class NoThreshold(TrailingVolScorer):
    """Same scores, but like a plain sklearn estimator it learns no ``threshold_``."""

    def fit(self, X, y=None):
        self.n_train_ = len(X)
        return self


class Spy(BaseEstimator):
    """Scores each date with the length of its training set; remembers nothing else."""

    def fit(self, X, y=None):
        self.n_train_, self.threshold_ = len(X), 0.5
        return self

    def score(self, X):
        return pd.Series(float(self.n_train_), index=X.index)


class Warns(TrailingVolScorer):
    """Says the same thing at every fit, as FinVAE does about a holiday row in the training data."""

    def fit(self, X, y=None):
        warnings.warn("the training data hold a holiday row", UserWarning, stacklevel=2)
        return super().fit(X, y)


def market(n_days=700, n_assets=4, seed=0, crashes=(300, 450, 600)):
    """Daily log returns with a common factor and a few crash days."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days)
    common = rng.normal(0.0004, 0.01, n_days)
    common[[day for day in crashes if day < n_days]] = -0.08
    values = common[:, None] + rng.normal(0, 0.005, (n_days, n_assets))
    return pd.DataFrame(values, index=dates, columns=[f"S{i}" for i in range(n_assets)])


FAST = dict(refit_every=50, min_train=200)


# --------------------------------------------------------------------------------------------------
# walk_forward
# --------------------------------------------------------------------------------------------------


def test_walk_forward_output_layout():
    r = market()
    before = r.copy()
    wf = walk_forward(TrailingVolScorer(random_state=0), r, **FAST)
    pd.testing.assert_frame_equal(r, before)
    assert wf.index.equals(r.index[200:])
    assert list(wf.columns) == ["score", "flag", "threshold", "refit_date"]
    assert wf["flag"].dtype == bool and wf["score"].notna().all()
    assert (wf["flag"] == (wf["score"] > wf["threshold"])).all()
    assert wf.loc[r.index[300], "flag"]  # the crashes are flagged out of sample
    # refit_date: the last training date, the day before each block's first scored date.
    first_of_block = r.index[200::50]
    assert (wf.loc[first_of_block, "refit_date"].to_numpy() == r.index[199::50][: len(first_of_block)]).all()
    assert wf["refit_date"].nunique() == len(first_of_block) == 10


def test_each_refit_sees_only_the_past():
    r = market(n_days=430)
    wf = walk_forward(Spy(), r, refit_every=50, min_train=200)
    starts = np.arange(200, 430, 50)
    assert wf["score"].to_numpy().tolist() == np.repeat(starts, np.diff(np.append(starts, 430))).tolist()
    assert (wf["refit_date"] < wf.index).all()
    rolling = walk_forward(Spy(), r, refit_every=50, min_train=200, window=220)
    assert rolling["score"].tolist() == [200.0] * 50 + [220.0] * 180


def test_start_date():
    r = market(n_days=500)
    late = walk_forward(Spy(), r, refit_every=50, min_train=200, start="2016-03-01")
    assert late.index[0] == r.loc["2016-03-01":].index[0]
    early = walk_forward(Spy(), r, refit_every=50, min_train=200, start="2000-01-01")
    assert early.index[0] == r.index[200]  # min_train still applies


@pytest.mark.parametrize("window", ["expanding", 250])
def test_walk_forward_no_look_ahead(window):
    r = market()
    t = r.index[420]  # inside a block: its later days change, its fit and earlier scores must not
    changed = r.copy()
    changed.loc[changed.index > t] = np.random.default_rng(1).normal(0, 0.05, changed.loc[changed.index > t].shape)
    est = TrailingVolScorer(random_state=0)
    a = walk_forward(est, r, window=window, **FAST)
    b = walk_forward(est, changed, window=window, **FAST)
    pd.testing.assert_frame_equal(a.loc[:t], b.loc[:t])
    assert not a.loc[a.index > t, "score"].equals(b.loc[b.index > t, "score"])  # the change is visible


def test_n_jobs_and_backend_give_the_same_result():
    r = market()
    est = TrailingVolScorer(random_state=3)
    one = walk_forward(est, r, n_jobs=1, **FAST)
    two = walk_forward(est, r, n_jobs=2, **FAST)
    pd.testing.assert_frame_equal(one, two)
    with joblib.parallel_config(backend="threading", n_jobs=2):
        threads = walk_forward(est, r, **FAST)
    pd.testing.assert_frame_equal(one, threads)
    with joblib.parallel_config(backend="multiprocessing", n_jobs=2):  # cannot stream results: falls back to a list
        pd.testing.assert_frame_equal(one, walk_forward(est, r, **FAST))
    # The seed matters (so the equality above is not vacuous), and clone keeps it per refit.
    other = walk_forward(TrailingVolScorer(random_state=4), r, **FAST)
    assert not one["threshold"].equals(other["threshold"])
    assert est.get_params()["random_state"] == 3 and not hasattr(est, "threshold_")  # caller's object untouched


def test_estimator_without_threshold_uses_training_quantile():
    r = market()
    wf = walk_forward(NoThreshold(), r, **FAST)
    train_scores = NoThreshold()._scores(r.iloc[:200]).dropna()
    assert wf["threshold"].iloc[0] == pytest.approx(np.quantile(train_scores, 0.99))
    explicit = walk_forward(TrailingVolScorer(random_state=0), r, contamination=0.1, **FAST)
    assert explicit["threshold"].iloc[0] == pytest.approx(np.quantile(train_scores, 0.9))


def test_walk_forward_progress_bar(capsys):
    walk_forward(Spy(), market(n_days=300), refit_every=50, min_train=200, verbose=1)
    assert "walk-forward refits" in capsys.readouterr().err


def test_walk_forward_errors():
    r = market(n_days=300)
    with pytest.raises(TypeError, match="one score per date"):
        walk_forward(PCA(1), r, **FAST)  # sklearn's score: one number per data set
    with pytest.raises(DataError, match="Nothing to score"):
        walk_forward(Spy(), r, refit_every=50, min_train=300)
    with pytest.raises(ValueError, match="shorter than min_train"):
        walk_forward(Spy(), r, window=100, **FAST)
    with pytest.raises(ValueError, match="window must be"):
        walk_forward(Spy(), r, window="rolling", **FAST)
    with pytest.raises(ValueError, match="refit_every"):
        walk_forward(Spy(), r, refit_every=0, min_train=200)
    with pytest.raises(ValueError, match="contamination"):
        walk_forward(Spy(), r, contamination=0.9, **FAST)
    with pytest.raises(DataError, match="not sorted"):
        walk_forward(Spy(), r.iloc[::-1], **FAST)
    with pytest.raises(ValueError, match="n_jobs must be None, a number of processes"):
        walk_forward(Spy(), r, n_jobs=0, **FAST)


def test_walk_forward_reads_a_plain_start_date_in_the_returns_time_zone():
    r = market(n_days=300)
    plain = walk_forward(Spy(), r, start=r.index[220].date().isoformat(), **FAST)
    zoned = walk_forward(Spy(), r.tz_localize("UTC"), start=r.index[220].date().isoformat(), **FAST)
    np.testing.assert_array_equal(zoned["score"].to_numpy(), plain["score"].to_numpy())
    with pytest.raises(DataError, match="has a time zone, but the returns' dates have none"):
        walk_forward(Spy(), r, start=pd.Timestamp(r.index[220], tz="UTC"), **FAST)


# --------------------------------------------------------------------------------------------------
# anomaly_overlay
# --------------------------------------------------------------------------------------------------


def constant(n_days=20, daily=0.01, assets=("A",)):
    dates = pd.bdate_range("2020-01-01", periods=n_days)
    return pd.DataFrame(daily, index=dates, columns=list(assets))


def flags_on(returns, *days):
    flags = pd.Series(False, index=returns.index)
    flags.iloc[list(days)] = True
    return flags


@pytest.mark.filterwarnings("ignore:The volatility target has no volatility estimate")  # 20 days, no history
def test_flag_moves_the_position_from_the_next_day_for_hold_days():
    r = constant()
    res = anomaly_overlay(r, flags_on(r, 5), hold=3, cost_bps=0, returns_kind="simple")
    assert isinstance(res, OverlayResult)
    expected = np.ones(20)
    expected[6:9] = 0.0  # flag at the close of day 5: out on days 6, 7, 8
    np.testing.assert_array_equal(res.positions, expected)
    np.testing.assert_allclose(res.returns, 0.01 * expected)
    assert res.returns.name == "finvae_overlay" and res.returns.index.equals(r.index)
    np.testing.assert_allclose(res.benchmark, 0.01)


@pytest.mark.filterwarnings("ignore:The volatility target has no volatility estimate")  # 20 days, no history
def test_hold_extends_from_the_last_flag():
    r = constant()
    res = anomaly_overlay(r, flags_on(r, 0, 5, 7), hold=3, cost_bps=0, returns_kind="simple",
                          exposure_when_flagged=0.25)
    expected = np.ones(20)
    expected[1:4] = 0.25  # flag on the first day acts from the second
    expected[6:11] = 0.25  # flags on 5 and 7: de-risked until 7 + 3
    np.testing.assert_array_equal(res.positions, expected)
    last = anomaly_overlay(r, flags_on(r, 19), hold=3, cost_bps=0, returns_kind="simple")
    assert (last.positions == 1).all()  # a flag on the last day acts after the backtest


@pytest.mark.filterwarnings("ignore:The volatility target has no volatility estimate")  # 20 days, no history
def test_costs_per_unit_of_turnover():
    r = constant()
    res = anomaly_overlay(r, flags_on(r, 5), hold=3, cost_bps=10, returns_kind="simple")
    gross = anomaly_overlay(r, flags_on(r, 5), hold=3, cost_bps=0, returns_kind="simple")
    cost = gross.returns - res.returns
    expected = np.zeros(20)
    expected[[6, 9]] = 0.001  # out on day 6, back in on day 9: one unit of turnover each
    np.testing.assert_allclose(cost, expected, atol=1e-15)
    assert res.summary().loc["turnover", "overlay"] == pytest.approx(2 / 20 * 252)
    assert res.summary().loc["turnover", "buy & hold"] == 0


def test_log_returns_are_converted_to_simple():
    dates = pd.bdate_range("2020-01-01", periods=30)
    r = pd.DataFrame({"A": 0.02, "B": -0.01}, index=dates)
    res = anomaly_overlay(r, flags_on(r), cost_bps=0)  # returns_kind="log" by default
    np.testing.assert_allclose(res.benchmark, (np.expm1(0.02) + np.expm1(-0.01)) / 2)
    simple = anomaly_overlay(r, flags_on(r), cost_bps=0, returns_kind="simple")
    np.testing.assert_allclose(simple.benchmark, 0.005)


def test_missing_returns_sit_out_and_weights_renormalise():
    dates = pd.bdate_range("2020-01-01", periods=30)
    r = pd.DataFrame({"A": 0.02, "B": -0.01}, index=dates)
    r.iloc[3, 1] = np.nan
    r.iloc[4, :] = np.nan
    before = r.copy()
    eq = anomaly_overlay(r, flags_on(r), cost_bps=0, returns_kind="simple")
    assert eq.benchmark.iloc[2] == pytest.approx(0.005)
    assert eq.benchmark.iloc[3] == pytest.approx(0.02)  # B missing: A alone
    assert eq.benchmark.iloc[4] == 0.0  # nothing observed
    weights = pd.Series({"B": 0.25, "A": 0.75})  # any order of the assets
    fixed = anomaly_overlay(r, flags_on(r), cost_bps=0, returns_kind="simple", weights=weights)
    assert fixed.benchmark.iloc[2] == pytest.approx(0.75 * 0.02 - 0.25 * 0.01)
    assert fixed.benchmark.iloc[3] == pytest.approx(0.02)
    moving = pd.DataFrame({"A": np.linspace(0, 1, 30), "B": np.linspace(1, 0, 30)}, index=dates)
    dyn = anomaly_overlay(r, flags_on(r), cost_bps=0, returns_kind="simple", weights=moving)
    assert dyn.benchmark.iloc[0] == pytest.approx(-0.01) and dyn.benchmark.iloc[-1] == pytest.approx(0.02)
    pd.testing.assert_frame_equal(r, before)


def test_overlay_has_no_look_ahead():
    r = market()
    est = TrailingVolScorer(random_state=0)
    wf = walk_forward(est, r, **FAST)
    t = r.index[430]
    changed = r.copy()
    changed.loc[changed.index > t] *= -3.0
    wf_changed = walk_forward(est, changed, **FAST)
    a = anomaly_overlay(r, wf["flag"])
    b = anomaly_overlay(changed, wf_changed["flag"])
    pd.testing.assert_series_equal(a.returns.loc[:t], b.returns.loc[:t])
    pd.testing.assert_series_equal(a.positions.loc[:t], b.positions.loc[:t])
    # Day t's return is still unknown when the position of day t is set: changing it moves no position.
    c = anomaly_overlay(r.assign(S0=r["S0"].where(r.index != t, 0.3)), wf["flag"])
    pd.testing.assert_series_equal(a.positions, c.positions)


def test_vol_target_matches_average_exposure_and_is_causal():
    r = market()
    flags = walk_forward(TrailingVolScorer(random_state=0), r, **FAST)["flag"]
    res = anomaly_overlay(r, flags, hold=10)
    assert res.positions.mean() < 1
    assert res.vol_target_positions.mean() == pytest.approx(res.positions.mean(), abs=1e-9)
    assert res.vol_target_positions.between(0, 1).all()
    # The last day's return feeds no volatility estimate, so changing it moves no exposure.
    last = r.copy()
    last.iloc[-1] = 0.2
    pd.testing.assert_series_equal(anomaly_overlay(last, flags, hold=10).vol_target_positions,
                                   res.vol_target_positions)
    no_flags = anomaly_overlay(r, flags & False)
    assert (no_flags.vol_target_positions == 1).all()
    pd.testing.assert_series_equal(no_flags.returns, no_flags.benchmark, check_names=False)


def test_summary_definitions():
    dates = pd.bdate_range("2020-01-01", periods=4)
    r = pd.DataFrame({"A": [0.10, -0.50, 0.20, 0.0]}, index=dates)
    table = anomaly_overlay(r, flags_on(r), cost_bps=0, returns_kind="simple").summary()
    assert list(table.columns) == ["overlay", "buy & hold", "vol target"]
    assert list(table.index) == ["annual return", "volatility", "Sharpe", "Sortino", "max drawdown", "Calmar",
                                 "turnover", "days de-risked", "average exposure"]
    bh = table["buy & hold"]
    x = r["A"].to_numpy()
    assert bh["max drawdown"] == pytest.approx(0.55 / 1.1 - 1)
    assert bh["annual return"] == pytest.approx(0.66 ** (252 / 4) - 1)
    assert bh["Sharpe"] == pytest.approx(x.mean() / x.std(ddof=1) * np.sqrt(252))
    assert bh["Sortino"] == pytest.approx(x.mean() / np.sqrt((np.minimum(x, 0) ** 2).mean()) * np.sqrt(252))
    assert bh["Calmar"] == pytest.approx(bh["annual return"] / 0.5)
    assert bh["days de-risked"] == 0 and bh["average exposure"] == 1


def test_plot_returns_a_figure_with_shaded_periods():
    r = market()
    flags = walk_forward(TrailingVolScorer(random_state=0), r, **FAST)["flag"]
    res = anomaly_overlay(r, flags)
    fig = res.plot()
    top, bottom = fig.axes
    assert len(top.lines) >= 3 and len(bottom.lines) == 3
    runs = np.diff(np.concatenate([[0], (res.positions < 1).astype(int), [0]]))
    assert len(top.patches) == (runs == 1).sum() > 0
    assert "overlay" in top.get_title().lower()
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("daily, scale", [(0.01, "log"), (0.0002, "linear")])
def test_the_equity_axis_is_logarithmic_with_plain_ticks_only_for_manyfold_growth(daily, scale):
    dates = pd.bdate_range("2000-01-03", periods=500)
    r = pd.DataFrame({"A": np.log1p(np.full(500, daily))}, index=dates)  # 144-fold, or 10 %
    top = anomaly_overlay(r, pd.Series(False, index=dates)).plot().axes[0]
    assert top.get_yscale() == scale
    top.figure.canvas.draw()
    labels = [t.get_text() for t in top.get_yticklabels() if t.get_text()]
    assert len(labels) >= 3 and not any("10^" in t or "times" in t for t in labels)  # 1, 2, 5, 10 ... not 10⁰
    matplotlib.pyplot.close(top.figure)


def test_overlay_accepts_walk_forward_frame():
    r = market()
    wf = walk_forward(Spy(), r, **FAST)
    pd.testing.assert_series_equal(anomaly_overlay(r, wf).returns, anomaly_overlay(r, wf["flag"]).returns)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(flags="shifted"), DataError, "not in returns"),
        (dict(flags="gap"), DataError, "consecutive"),
        (dict(flags="nan"), DataError, "missing"),
        (dict(flags="text"), DataError, "booleans"),
        (dict(weights="value"), ValueError, "weights must be"),
        (dict(weights=pd.Series({"A": 1.0, "Z": 0.0})), DataError, "unknown"),
        (dict(weights=pd.Series({"A": 1.0})), DataError, "missing"),
        (dict(weights="short_frame"), DataError, "no row"),
        (dict(returns_kind="pct"), ValueError, "returns_kind"),
        (dict(hold=0), ValueError, "hold"),
        (dict(exposure_when_flagged=1.5), ValueError, "exposure_when_flagged"),
        (dict(cost_bps=-1), ValueError, "cost_bps"),
        (dict(cost_bps=float("inf")), ValueError, "cost_bps must be a finite number"),
        (dict(vol_target_halflife=float("inf")), ValueError, "vol_target_halflife must be a finite number"),
        (dict(periods_per_year=True), ValueError, "periods_per_year"),
    ],
)
def test_overlay_errors(kwargs, error, match):
    r = constant(assets=("A", "B"))
    flags = flags_on(r, 3)
    kind = kwargs.pop("flags", None)
    if kind == "shifted":
        flags = flags.set_axis(flags.index + pd.Timedelta(days=1000))
    elif kind == "gap":
        flags = flags.drop(flags.index[5])
    elif kind == "nan":
        flags = flags.astype(object).where(flags.index != flags.index[2], None)
    elif kind == "text":
        flags = flags.map({True: "yes", False: "no"})
    if isinstance(kwargs.get("weights"), str) and kwargs["weights"] == "short_frame":
        kwargs["weights"] = pd.DataFrame(0.5, index=r.index[:10], columns=r.columns)
    with pytest.raises(error, match=match):
        anomaly_overlay(r, flags, **kwargs)


@pytest.mark.filterwarnings("ignore:The volatility target has no volatility estimate")  # 20 days, no history
def test_overlay_accepts_booleans_held_as_objects():
    r = constant(assets=("A", "B"))
    flags = flags_on(r, 3)
    result = anomaly_overlay(r, flags.astype(object))
    pd.testing.assert_series_equal(result.positions, anomaly_overlay(r, flags).positions)


def test_vol_target_without_any_estimate_says_so():
    """With no history before the flags and a long half-life, no day has a volatility estimate: a warning."""
    r = constant(n_days=20, assets=("A", "B"))
    with pytest.warns(UserWarning, match="no volatility estimate on any of the 20 backtest day"):
        result = anomaly_overlay(r, flags_on(r, 3), vol_target_halflife=252)
    assert (result.vol_target_positions == 1.0).all()


def test_overlay_refuses_prices_and_repeated_weights_and_keeps_the_returns_dates():
    dates = pd.bdate_range("2020-01-01", periods=60)
    returns = pd.DataFrame(np.random.default_rng(5).normal(0, 0.01, (60, 2)), index=dates, columns=["A", "B"])
    flags = pd.Series(False, index=dates)
    flags.iloc[10] = True
    with pytest.raises(DataError, match="look like price levels, not returns"):
        anomaly_overlay(100.0 * np.exp(returns.cumsum()), flags)
    with pytest.raises(DataError, match=r"weights names asset\(s\) \['A'\] more than once"):
        anomaly_overlay(returns, flags, weights=pd.Series([0.5, 0.3, 0.2], index=["A", "A", "B"]))
    as_text = flags.set_axis(dates.strftime("%Y-%m-%d"))  # flags.csv read back without parse_dates
    result = anomaly_overlay(returns, as_text)
    assert result.returns.index.equals(dates) and result.positions.index.equals(dates)
    pd.testing.assert_series_equal(result.returns, anomaly_overlay(returns, flags).returns)


def test_weights_as_a_dict_read_like_a_series():
    dates = pd.bdate_range("2020-01-01", periods=40)
    returns = pd.DataFrame(np.random.default_rng(7).normal(0, 0.01, (40, 2)), index=dates, columns=["A", "B"])
    flags = pd.Series(False, index=dates)
    by_dict = anomaly_overlay(returns, flags, weights={"B": 0.3, "A": 0.7})
    by_series = anomaly_overlay(returns, flags, weights=pd.Series({"A": 0.7, "B": 0.3}))
    pd.testing.assert_series_equal(by_dict.returns, by_series.returns)


class Pedantic(UserWarning):
    """A warning class that wants more than its message."""

    def __init__(self, message, code):
        super().__init__(message, code)


class WarnsPedantically(TrailingVolScorer):
    def fit(self, X, y=None):
        warnings.warn(Pedantic("odd data", 7), stacklevel=2)
        return super().fit(X, y)


def test_worker_processes_warnings_reach_the_caller_once_each_under_its_filters(tmp_path):
    r = market()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        walk_forward(Warns(), r, n_jobs=2, **FAST)  # ten refits in worker processes, each warning
    said = [w for w in caught if "holiday row" in str(w.message)]
    assert len(said) == 1 and str(said[0].message) == "the training data hold a holiday row"
    assert said[0].filename == __file__  # the caller's line, not a worker's multiprocessing/process.py
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("ignore")  # the caller's filters reach them
        walk_forward(Warns(), r, n_jobs=2, **FAST)
    assert not quiet
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an error at the first refit's warning, before its block is saved
        for _ in range(2):  # and again on a re-run: nothing was checkpointed past the warning
            with pytest.raises(UserWarning, match="holiday row"):
                walk_forward(Warns(), r, n_jobs=2, checkpoint_dir=tmp_path, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        walk_forward(WarnsPedantically(), r, n_jobs=2, **FAST)  # its class cannot be rebuilt from the text
    said = [w for w in caught if "odd data" in str(w.message)]
    assert len(said) == 1 and said[0].category is Pedantic  # its class kept, for filters on it


def test_the_caller_s_process_shows_each_refit_warning_once_and_a_failing_refit_keeps_its_own():
    r = market()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        walk_forward(Warns(), r, n_jobs=1, **FAST)  # ten refits in this process, each warning
    assert len([w for w in caught if "holiday row" in str(w.message)]) == 1

    class WarnsThenFails(Warns):
        def fit(self, X, y=None):
            super().fit(X, y)
            raise RuntimeError("no luck")

    with pytest.raises(RuntimeError, match="no luck") as info:
        walk_forward(WarnsThenFails(), r, n_jobs=2, **FAST)
    assert any("UserWarning in this refit: the training data hold a holiday row" in note
               for note in info.value.__notes__)


def test_a_late_listing_says_which_refit_and_what_start_would_do():
    from finvae import FinVAE

    r = market()
    r.iloc[:400, 3] = np.nan  # listed on row 400, after the first refits' training ends
    with pytest.raises(DataError, match=r"the refit on the \d+ rows up to .*before the first returns of S3.*start="):
        walk_forward(FinVAE(window=10, hidden=8, epochs=1, verbose=0), r, n_jobs=1, **FAST)


@pytest.mark.filterwarnings("ignore:asset\\(s\\) S3")  # its short history, before the refit that fails
def test_a_delisted_asset_in_a_rolling_window_and_other_errors_name_their_refit():
    from finvae import FinVAE

    r = market()
    r.iloc[250:, 3] = np.nan  # delisted on row 250: rolling windows after it hold none of its returns
    with pytest.raises(DataError, match=r"S3 had returns only before this refit's window \(delisted\?\)"):
        walk_forward(FinVAE(window=10, hidden=8, epochs=1, verbose=0), r, n_jobs=1, window=200, **FAST)

    class Fails(TrailingVolScorer):
        def fit(self, X, y=None):
            raise RuntimeError("out of luck")

    with pytest.raises(RuntimeError, match="out of luck") as info:
        walk_forward(Fails(), market(), n_jobs=1, **FAST)
    assert any("In walk_forward, the refit on the 200 rows up to" in note for note in info.value.__notes__)


def test_the_overlay_says_when_its_annualising_does_not_fit_the_dates():
    from finvae.backtest import rows_per_year

    dates = pd.date_range("2010-01-01", periods=300, freq="W-FRI")  # weekly rows
    returns = pd.DataFrame(np.random.default_rng(0).normal(0.001, 0.02, (300, 3)), index=dates, columns=list("ABC"))
    flags = pd.Series(False, index=dates[100:])
    assert rows_per_year(dates) == 52
    with pytest.warns(UserWarning, match=r"about 52 rows a year.*periods_per_year=252.*Pass periods_per_year=52"):
        anomaly_overlay(returns, flags)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        weekly = anomaly_overlay(returns, flags, periods_per_year=52).summary()
    daily = anomaly_overlay(returns.set_axis(pd.bdate_range("2010-01-01", periods=300)), flags.set_axis(
        pd.bdate_range("2010-01-01", periods=300)[100:])).summary()
    expected = daily.loc["volatility", "buy & hold"] * np.sqrt(52 / 252)  # the same returns, annualised weekly
    assert weekly.loc["volatility", "buy & hold"] == pytest.approx(expected)
