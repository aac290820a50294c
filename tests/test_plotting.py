"""finvae.plotting: each figure draws what its title says, from pandas inputs left unchanged."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from finvae import DataError
from finvae.plotting import equal_weight_index, plot_asset_contributions, plot_factors, plot_scores


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def dates():
    return pd.bdate_range("2020-01-01", periods=300, name="Date")


@pytest.fixture
def scores(dates):
    values = np.random.default_rng(0).gamma(2.0, 1.0, len(dates))
    values[:19] = np.nan  # the first window has no score, as FinVAE gives
    return pd.Series(values, index=dates, name="score")


def _scatter_dates(ax) -> pd.DatetimeIndex:
    """The x positions of the points of an axis' scatter plots, as dates."""
    xs = np.concatenate([c.get_offsets()[:, 0] for c in ax.collections if len(c.get_offsets())])
    return pd.DatetimeIndex(matplotlib.dates.num2date(xs)).tz_localize(None).normalize()


def test_equal_weight_index_averages_simple_returns_and_skips_missing(dates):
    log = pd.DataFrame({"A": np.log([1.10, 1.0]), "B": [np.log(0.90), np.nan]}, index=dates[:2])
    before = log.copy()
    index = equal_weight_index(log)
    # Day 1: (10 % - 10 %) / 2 = 0; day 2: only A, with 0 %.
    np.testing.assert_allclose(index.to_numpy(), [1.0, 1.0])
    pd.testing.assert_frame_equal(log, before)


def test_plot_scores_marks_exactly_the_flagged_dates_on_both_panels(scores, dates):
    threshold = pd.Series(np.where(np.arange(len(dates)) < 150, 4.0, 5.0), index=dates)
    flags = scores > threshold
    index = pd.Series(np.linspace(100, 120, len(dates)), index=dates)
    before = scores.copy()

    fig = plot_scores(scores, threshold, flags, index)

    top, bottom = fig.axes
    assert "threshold" in top.get_title() and "flag" in top.get_title()
    expected = pd.DatetimeIndex(dates[flags.to_numpy()])
    assert 0 < len(expected) < len(dates)
    for ax in (top, bottom):
        assert _scatter_dates(ax).sort_values().equals(expected)
    # The threshold is drawn as given: a step from 4 to 5.
    (step,) = [line for line in bottom.get_lines() if line.get_label() == "threshold"]
    assert set(np.round(step.get_ydata(), 6)) == {4.0, 5.0}
    assert top.get_lines()[0].get_ydata()[0] == pytest.approx(1.0)  # the index is rebased to 1
    pd.testing.assert_series_equal(scores, before)


def test_plot_scores_with_a_scalar_threshold_derives_the_flags(scores):
    fig = plot_scores(scores, 4.0)

    (ax,) = fig.axes  # no index: the score panel only
    assert _scatter_dates(ax).sort_values().equals(pd.DatetimeIndex(scores.index[scores.to_numpy() > 4.0]))
    assert any("4.00" in text.get_text() for text in ax.get_legend().get_texts())


def test_plot_scores_turns_prices_into_the_equal_weight_index(scores, dates):
    prices = pd.DataFrame({"A": np.linspace(10, 20, len(dates)), "B": np.full(len(dates), 5.0)}, index=dates)
    fig = plot_scores(scores, 4.0, prices_or_index=prices)
    level = fig.axes[0].get_lines()[0].get_ydata()
    # Half in A (doubles, rebalanced daily), half in a flat B: ends between 1 and 2.
    assert level[0] == pytest.approx(1.0) and 1.3 < level[-1] < 1.6


def test_plot_scores_rejects_what_is_not_a_series(scores):
    with pytest.raises(DataError, match="scores must be a pandas Series"):
        plot_scores(scores.to_numpy(), 4.0)
    with pytest.raises(DataError, match="threshold must be a number or a Series"):
        plot_scores(scores, "high")


def test_plot_scores_refuses_missing_flags_and_prices_of_another_period(scores, dates):
    flags = pd.Series(np.nan, index=scores.index, dtype=object)
    flags.iloc[5] = True
    with pytest.raises(DataError, match=r"flags holds \d+ missing value\(s\)"):
        plot_scores(scores, 4.0, flags=flags)
    elsewhere = pd.DataFrame({"A": [10.0, 11.0], "B": [5.0, 5.5]}, index=pd.bdate_range("1990-01-01", periods=2))
    with pytest.raises(DataError, match="no values on the dates of scores"):
        plot_scores(scores, 4.0, prices_or_index=elsewhere)


def test_plot_factors_has_one_panel_per_factor_and_skips_the_first_window(dates):
    factors = pd.DataFrame(np.random.default_rng(1).normal(size=(len(dates), 3)), index=dates,
                           columns=["factor_0", "factor_1", "factor_2"])
    factors.iloc[:19] = np.nan
    fig = plot_factors(factors)

    assert [ax.get_ylabel() for ax in fig.axes] == ["factor_0", "factor_1", "factor_2"]
    assert "factors" in fig.axes[0].get_title()
    daily = fig.axes[1].get_lines()[0]
    np.testing.assert_allclose(daily.get_ydata(), factors["factor_1"].iloc[19:].to_numpy())


def test_plot_factors_breaks_its_lines_at_a_gap_between_dates(dates):
    factors = pd.DataFrame(np.random.default_rng(1).normal(size=(len(dates), 1)), index=dates, columns=["factor_0"])
    factors.iloc[:19] = np.nan  # the first window: left out
    factors.iloc[100:160] = np.nan  # three months with too few assets: a gap, not a straight line across it
    daily, rolling = plot_factors(factors).axes[0].get_lines()[:2]
    assert len(daily.get_ydata()) == len(dates) - 19
    assert np.isnan(daily.get_ydata()[100 - 19: 160 - 19]).all()
    assert np.isnan(rolling.get_ydata()[100 - 19: 160 - 19]).all()
    sparse = factors.copy()
    sparse.iloc[::2] = np.nan  # every other date: no two values side by side, so no segment to draw
    lone = plot_factors(sparse).axes[0].get_lines()[2]
    assert len(lone.get_xdata()) == sparse["factor_0"].notna().sum() and lone.get_marker() == "o"


def test_plot_factors_refuses_all_missing(dates):
    with pytest.raises(DataError, match="nothing to plot"):
        plot_factors(pd.DataFrame(np.nan, index=dates, columns=["factor_0"]))


def test_plot_asset_contributions_shows_the_top_days_in_order_with_shares_summing_to_one(scores, dates):
    rng = np.random.default_rng(2)
    raw = rng.random((len(dates), 12))
    shares = pd.DataFrame(raw / raw.sum(axis=1, keepdims=True), index=dates, columns=[f"S{i}" for i in range(12)])

    fig = plot_asset_contributions(shares, scores, top=10, n_assets=8)

    (ax,) = fig.axes
    assert ax.get_title() == "Per-asset contributions on the 10 most anomalous days"
    top_days = scores.sort_values(ascending=False).index[:10]
    ticks = sorted(zip(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], strict=True), reverse=True)
    # From the top bar down: the days by decreasing score, each labelled with its score.
    assert [label[:10] for _, label in ticks] == [f"{d:%Y-%m-%d}" for d in top_days]
    assert ticks[0][1].endswith(f"score {scores[top_days[0]]:.1f}")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 9 and legend[-1] == "other"  # 8 assets in colour, 4 pooled
    totals = {}
    for patch in ax.patches:
        y = round(patch.get_y() + patch.get_height() / 2, 6)
        totals[y] = totals.get(y, 0.0) + patch.get_width()
    assert len(totals) == 10
    np.testing.assert_allclose(list(totals.values()), 1.0)


@pytest.mark.parametrize("n_assets", [11, 12, 20])
def test_plot_asset_contributions_draws_more_than_ten_assets_in_their_own_colours(scores, dates, n_assets):
    raw = np.random.default_rng(3).random((len(dates), 12))
    shares = pd.DataFrame(raw / raw.sum(axis=1, keepdims=True), index=dates, columns=[f"S{i}" for i in range(12)])

    (ax,) = plot_asset_contributions(shares, scores, top=5, n_assets=n_assets).axes

    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == min(n_assets, 12) + (n_assets < 12) and ("other" in legend) == (n_assets < 12)
    colours = {tuple(p.get_facecolor()) for p in ax.patches}
    assert len(colours) == len(legend)
    totals = {}
    for patch in ax.patches:
        totals[round(patch.get_y(), 6)] = totals.get(round(patch.get_y(), 6), 0.0) + patch.get_width()
    np.testing.assert_allclose(list(totals.values()), 1.0)
    with pytest.raises(ValueError, match="n_assets must be an integer from 1 to 20"):
        plot_asset_contributions(shares, scores, n_assets=21)


def test_plot_asset_contributions_needs_dates_in_common(scores, dates):
    shares = pd.DataFrame({"A": 1.0}, index=pd.bdate_range("2010-01-01", periods=5))
    with pytest.raises(DataError, match="no dates with values in common"):
        plot_asset_contributions(shares, scores)


def test_plot_scores_and_equal_weight_index_refuse_the_other_kind_of_numbers(scores, dates):
    returns = pd.DataFrame(np.random.default_rng(4).normal(0, 0.01, (len(dates), 2)), index=dates, columns=["A", "B"])
    with pytest.raises(DataError, match="must hold price levels or an index level"):
        plot_scores(scores, 4.0, prices_or_index=returns)
    with pytest.raises(DataError, match="returns look like price levels"):
        equal_weight_index(100.0 * np.exp(returns.cumsum()))


@pytest.mark.parametrize(("end", "scale"), [(1.2, "linear"), (8.0, "log")])
def test_plot_scores_uses_a_log_scale_only_for_an_index_that_grows_manyfold(scores, dates, end, scale):
    index = pd.Series(np.geomspace(1.0, end, len(dates)), index=dates)
    top = plot_scores(scores, 4.0, prices_or_index=index).axes[0]
    assert top.get_yscale() == scale
    assert len([t for t in top.get_yticklabels() if t.get_text()]) >= 3  # readable: more than one tick


def test_steady_prices_plot_and_an_asset_called_other_keeps_its_share(scores, dates):
    steady = pd.DataFrame({"A": 100 * 1.0001 ** np.arange(len(dates)), "B": 50 * 1.0002 ** np.arange(len(dates))},
                          index=dates)  # money-market funds: prices that only rise
    assert len(plot_scores(scores, 4.0, prices_or_index=steady).axes) == 2
    raw = np.random.default_rng(6).random((len(dates), 4))
    shares = pd.DataFrame(raw / raw.sum(axis=1, keepdims=True), index=dates, columns=["other", "B", "C", "D"])
    (ax,) = plot_asset_contributions(shares, scores, top=5, n_assets=2).axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    days = scores.dropna().sort_values(ascending=False).index[:5]
    named = set(shares.loc[days].idxmax(axis=1)) | set(shares.loc[days].sum().nlargest(2).index)
    assert legend[-1] == "(other assets)" and set(legend[:-1]) <= named and len(legend) - 1 >= 2


def test_equal_weight_index_refuses_penny_prices(dates):
    pennies = pd.DataFrame({"A": np.linspace(0.2, 0.3, len(dates))}, index=dates)
    with pytest.raises(DataError, match="look like price levels, not returns"):
        equal_weight_index(pennies, kind="simple")


def test_a_single_date_is_drawn_as_a_point_in_a_week_around_it(scores, dates):
    from finvae.backtest import anomaly_overlay
    from finvae.plotting import plot_var_backtest

    one = scores.iloc[[-1]]
    returns = pd.DataFrame({"A": [0.01], "B": [-0.02]}, index=one.index)
    figures = [plot_scores(one, 4.0, prices_or_index=pd.Series([100.0], index=one.index)), plot_factors(returns),
               anomaly_overlay(returns, one > 4.0).plot(), plot_var_backtest(returns["A"], one * 0.01)]
    for fig in figures:
        for ax in fig.axes:
            lines = [line for line in ax.get_lines()
                     if len(line.get_xdata()) == 1 and np.isfinite(np.asarray(line.get_ydata(), float)).all()]
            assert lines and all(line.get_marker() == "o" for line in lines)  # matplotlib draws no 1-point line
            low, high = matplotlib.dates.num2date(ax.get_xlim())
            assert (high - low).days == 6
            assert isinstance(ax.xaxis.get_major_formatter(), matplotlib.dates.ConciseDateFormatter)  # no collisions
    many = plot_scores(scores, 4.0).axes[0].get_lines()[0]
    assert many.get_marker() == "None"  # a line of many dates stays a plain line


def test_asset_contributions_name_each_day_s_leader_and_grow_with_the_days(dates):
    rng = np.random.default_rng(3)
    shares = pd.DataFrame(rng.dirichlet(np.ones(30) * 0.3, len(dates)), index=dates,
                          columns=[f"A{i}" for i in range(30)])
    scores = pd.Series(rng.gamma(2.0, 1.0, len(dates)), index=dates)
    fig = plot_asset_contributions(shares, scores, top=12, n_assets=3)
    legend = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    days = scores.sort_values(ascending=False).index[:12]
    assert set(shares.loc[days].idxmax(axis=1)) <= legend  # no day's largest asset hidden in "other"
    bars = [p.get_facecolor() for p in fig.axes[0].patches]
    grey = matplotlib.colors.to_rgba("lightgray")
    assert sum(c == grey for c in bars) == 12  # one pooled segment a day, and no asset coloured like it
    assert plot_asset_contributions(shares, scores, top=60).get_size_inches()[1] > 15  # 60 readable rows
    numbered = scores.reset_index(drop=True)
    by_number = plot_asset_contributions(shares.reset_index(drop=True), numbered, top=3)
    texts = [t.get_text() for t in by_number.axes[0].get_yticklabels()]
    assert f"{numbered.idxmax()}  score {numbered.max():.1f}" in texts  # a non-date index: its labels as they are


def test_a_level_with_a_missing_price_keeps_the_move_and_marks_every_flag(dates):
    prices = pd.DataFrame({"A": 100.0 * np.ones(len(dates)), "B": 50.0 * np.ones(len(dates))}, index=dates)
    prices.iloc[100:, 0] = 50.0  # A halves on day 100 ...
    prices.iloc[100, 0] = np.nan  # ... a day with no quote: the fall lands on day 101
    scores = pd.Series(1.0, index=dates)
    fig = plot_scores(scores, 4.0, pd.Series(scores.index == dates[150], index=dates), prices)
    line = fig.axes[0].get_lines()[0]
    assert np.nanmin(line.get_ydata()) == pytest.approx(0.75)  # (-50 % + 0 %) / 2, not lost across the gap
    assert line.get_label() == "equal-weight index"
    weekly = pd.Series(np.linspace(100, 110, len(dates))[::5], index=dates[::5], name="S&P 500")
    flags = pd.Series(False, index=dates)
    flags.iloc[[51, 52, 53]] = True  # not on the weekly calendar
    top = plot_scores(scores, 4.0, flags, weekly).axes[0]
    assert top.get_lines()[0].get_label() == "S&P 500"
    assert len(top.collections[0].get_offsets()) == 3  # each flag marked at the level's last value before it


def test_contributions_colour_the_largest_first_and_flags_past_the_level_are_not_drawn(dates):
    shares = pd.DataFrame({"A": [0.9, 0.1, 0.5], "B": [0.05, 0.1, 0.1], "C": [0.05, 0.1, 0.1],
                           "D": [0.0, 0.7, 0.3]}, index=dates[:3])
    scores = pd.Series([3.0, 2.0, 1.0], index=dates[:3])
    fig = plot_asset_contributions(shares, scores, n_assets=2)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend[:2] == ["A", "D"]  # totals 1.5 and 1.0: the largest first
    level = pd.Series(np.linspace(100, 110, 100), index=dates[:100], name="index")
    flags = pd.Series(dates.isin(dates[[50, 150]]), index=dates)
    top = plot_scores(pd.Series(1.0, index=dates), 4.0, flags, level).axes[0]
    assert len(top.collections[0].get_offsets()) == 1  # the flag after the level's last date has no level to sit on


@pytest.mark.parametrize("label", [7, "day 7"])
def test_a_single_point_on_another_index_is_drawn(label):
    fig = plot_scores(pd.Series([5.0], index=[label]), 4.0)
    assert fig.axes[0].get_lines()[0].get_marker() == "o"


def test_dates_in_a_time_zone_are_labelled_in_it():
    tokyo = pd.date_range("2024-03-04", periods=5, freq="D", tz="Asia/Tokyo")
    fig = plot_scores(pd.Series([1.0, 2, 3, 4, 5], index=tokyo), 4.0)
    ax = fig.axes[0]
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert "Mar-04" in labels and "Mar-03" not in labels  # the Tokyo dates, not shifted to UTC's Mar-03


def test_every_plot_draws_into_the_caller_s_axes_and_says_how_many_it_needs(scores, dates):
    from finvae.backtest import anomaly_overlay
    from finvae.plotting import plot_var_backtest

    returns = pd.DataFrame({"A": np.random.default_rng(1).normal(0.0, 0.01, len(dates))}, index=dates)
    index = pd.Series(np.linspace(100, 120, len(dates)), index=dates)
    factors = pd.DataFrame({"f0": scores, "f1": -scores})
    shares = pd.DataFrame({"A": 0.7, "B": 0.3}, index=dates)
    fig, grid = plt.subplots(3, 3, figsize=(9, 9))
    fig.suptitle("my dashboard")
    drawn = [
        plot_scores(scores, 4.0, axes=grid[0, 0]),
        plot_scores(scores, 4.0, None, index, axes=grid[:2, 1]),
        plot_factors(factors, axes=[grid[1, 0], grid[2, 0]]),
        plot_asset_contributions(shares, scores, top=3, ax=grid[2, 1]),
        plot_var_backtest(returns["A"], pd.Series(0.02, index=dates), ax=grid[0, 2]),
        anomaly_overlay(returns, scores > 4.0).plot(axes=grid[1:, 2]),
    ]
    assert all(f is fig for f in drawn) and len(fig.axes) == 9  # no other figure, no new axes
    assert plt.get_fignums() == [fig.number]
    assert fig._suptitle.get_text() == "my dashboard"
    assert all(ax.has_data() for ax in grid.ravel())  # every panel drawn into
    assert "flag" in grid[0, 1].get_title() and grid[1, 1].get_ylabel().startswith("anomaly score")

    with pytest.raises(DataError, match=r"draws 2 panel\(s\): pass 2 matplotlib Axes.*got 1"):
        plot_scores(scores, 4.0, None, index, axes=grid[0, 0])
    with pytest.raises(DataError, match=r"plot_factors \(one panel per factor\) draws 2 panel"):
        plot_factors(factors, axes=grid[0])
    with pytest.raises(DataError, match=r"got 1 \(str\)"):
        plot_var_backtest(returns["A"], pd.Series(0.02, index=dates), ax="left")
