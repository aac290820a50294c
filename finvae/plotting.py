"""Figures for FinVAE's outputs: pandas in, a matplotlib Figure out.

- :func:`plot_scores`: the anomaly score over time with its threshold and the
  flagged dates, under the equal-weight index of the assets;
- :func:`plot_factors`: the latent factors over time;
- :func:`plot_asset_contributions`: which assets made the most anomalous days
  anomalous.

Equity curves and drawdowns of a backtest are drawn by
:meth:`finvae.backtest.OverlayResult.plot`.

Each function creates its own figure, or draws into the caller's axes
(``ax=`` for a one-panel figure, ``axes=`` for several: e.g. a panel of a
larger grid of subplots), and never calls ``plt.show()``. Scripts that only
save figures should select matplotlib's non-interactive backend first
(``matplotlib.use("Agg")``), as ``finvae run`` does.
"""

from __future__ import annotations

from numbers import Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from finvae._exceptions import DataError
from finvae._validation import _levels_message
from finvae.datasets._market import looks_like_prices

if TYPE_CHECKING:
    from collections.abc import Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["equal_weight_index", "plot_asset_contributions", "plot_factors", "plot_scores", "plot_var_backtest"]


def _series(data, what: str) -> pd.Series:
    if isinstance(data, pd.DataFrame) and data.shape[1] == 1:
        data = data.iloc[:, 0]
    if not isinstance(data, pd.Series):
        raise DataError(f"{what} must be a pandas Series indexed by date; got {type(data).__name__}.")
    if len(data) == 0:
        raise DataError(f"{what} is empty: nothing to plot.")
    return data


def _given_axes(axes, needed: int, what: str) -> list:
    """The caller's axes as a list of ``needed`` matplotlib Axes, or a DataError that says what to pass.

    ``axes`` may be one Axes (``needed == 1``), a sequence or an array of them (e.g. from ``plt.subplots``).
    """
    from matplotlib.axes import Axes

    given = list(np.ravel(np.asarray(axes, dtype=object)))
    if len(given) != needed or not all(isinstance(ax, Axes) for ax in given):
        kinds = ", ".join(sorted({type(ax).__name__ for ax in given})) or "nothing"
        raise DataError(f"{what} draws {needed} panel(s): pass {needed} matplotlib Axes "
                        f"(e.g. from plt.subplots({needed})); got {len(given)} ({kinds}).")
    return given


def _line_markers(values) -> dict:
    """Markers for a line with fewer than two values: matplotlib draws no line through a single point.

    Returns keyword arguments for ``Axes.plot``, empty when the line is visible on its own.
    """
    return {"marker": "o", "markersize": 4} if np.count_nonzero(pd.notna(np.asarray(values))) < 2 else {}


def _frame_one_date(ax, dates) -> None:
    """Readable dates on the x axis, and a week around the date when there is only one.

    Matplotlib's concise date labels (a year once, then months or days) do not collide on a month of
    dates as the full ones do; with a single date, matplotlib would span years around it.
    """
    import matplotlib.dates as mdates

    if not isinstance(dates, pd.DatetimeIndex):
        return  # another index (numbers): matplotlib's own labels
    locator = mdates.AutoDateLocator(tz=dates.tz)  # the dates' own zone: labels in UTC would shift them
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=dates.tz))
    dates = dates.unique()
    if len(dates) == 1:
        ax.set_xlim(dates[0] - pd.Timedelta(days=3), dates[0] + pd.Timedelta(days=3))


def _growth_axis(ax, wealth, label: str, log: bool = True) -> None:
    """A wealth axis: on a log scale with ticks at 1, 2, 5, 10 written plainly when the wealth spans 3 times or more.

    Decades of growth on a log scale make a 20 % fall look alike in each; within a factor of 3 a log
    axis would show one tick or none, so the axis stays linear.
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter

    values = np.asarray(wealth, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if log and values.size and values.max() / values.min() >= 3:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda y, _: f"{y:g}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel(f"{label} (log scale)")
    else:
        ax.set_ylabel(label)


def equal_weight_index(returns: pd.DataFrame, *, kind: str = "log") -> pd.Series:
    """Growth of 1 invested in the daily-rebalanced equal-weight portfolio of ``returns``' assets.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_assets)
        Daily returns, NaN where missing (an asset without a return that day
        sits out; the average is over the others).
    kind : {"log", "simple"}, default="log"
        What ``returns`` holds.

    Returns
    -------
    Series named ``"equal-weight index"``, indexed like ``returns``, starting near 1.

    Examples
    --------
    >>> import pandas as pd
    >>> from finvae.plotting import equal_weight_index
    >>> returns = pd.DataFrame({"A": [0.10, -0.10], "B": [0.00, None]}, index=pd.bdate_range("2024-01-01", periods=2))
    >>> equal_weight_index(returns, kind="simple").round(4).tolist()    # +5 %, then -10 % (B sits out)
    [1.05, 0.945]
    """
    if kind not in ("log", "simple"):
        raise ValueError(f"kind must be 'log' or 'simple'; got {kind!r}.")
    if not isinstance(returns, pd.DataFrame):
        raise DataError(f"returns must be a pandas DataFrame (dates × assets); got {type(returns).__name__}.")
    if looks_like_prices(returns):  # the full rule: persistent levels below 0.5 (penny stocks) too
        raise DataError(_levels_message(returns.to_numpy(dtype=np.float64, na_value=np.nan), "returns"))
    return _growth(np.expm1(returns) if kind == "log" else returns)


def _growth(simple: pd.DataFrame) -> pd.Series:
    """Growth of 1 in the daily-rebalanced equal-weight portfolio of simple returns (no check on them)."""
    daily = simple.mean(axis=1, skipna=True).fillna(0.0)  # a day with no data at all: no move
    return (1.0 + daily).cumprod().rename("equal-weight index")


def plot_scores(
    scores: pd.Series,
    threshold: float | pd.Series,
    flags: pd.Series | None = None,
    prices_or_index: pd.Series | pd.DataFrame | None = None,
    *,
    title: str = "FinVAE anomaly score, threshold and flagged dates",
    score_label: str = "anomaly score",
    figsize: tuple[float, float] = (11.0, 6.5),
    axes: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """The anomaly score over time with its threshold, and the flagged dates marked.

    Parameters
    ----------
    scores : Series
        Anomaly score per date (``FinVAE.score`` or ``walk_forward(...)["score"]``).
    threshold : float or Series
        The flagging threshold: one number (``FinVAE.threshold_``) or one per
        date (``walk_forward(...)["threshold"]``, which changes at each refit),
        drawn as a step line.
    flags : Series of bool, optional
        Flagged dates. Default: ``scores > threshold``.
    prices_or_index : Series or DataFrame, optional
        What to draw above the score, with the flagged dates marked on it: an
        index level (Series, labelled with its name), or prices (DataFrame,
        turned into the daily-rebalanced equal-weight index of the assets; a
        move across a missing price counts on the next price). Only the dates
        of ``scores`` are shown; a flag on a date that the level lacks (another
        calendar) is marked at the level's last value before it. Without it,
        the figure has the score panel only.
    title : str
        Title of the figure.
    score_label : str, default="anomaly score"
        Legend entry of the score line.
    figsize : (float, float), default=(11, 6.5)
        Figure size in inches (of a new figure; ignored with ``axes``).
    axes : Axes or sequence of 2 Axes, optional
        Draw into these instead of a new figure: one Axes for the score panel
        alone, two (the level's, then the score's) with ``prices_or_index``.
        The caller's figure keeps its size and layout.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the one that holds ``axes``.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from finvae.plotting import plot_scores
    >>> dates = pd.bdate_range("2024-01-01", periods=60)
    >>> scores = pd.Series(np.random.default_rng(0).exponential(size=60), index=dates)   # e.g. model.score(returns)
    >>> fig = plot_scores(scores, threshold=3.0)      # e.g. model.threshold_
    >>> len(fig.axes)                                 # the score panel only (no prices_or_index)
    1
    """
    import matplotlib.pyplot as plt
    scores = _series(scores, "scores")
    if isinstance(threshold, pd.Series):
        threshold = threshold.reindex(scores.index)
    elif not isinstance(threshold, Real):
        raise DataError(f"threshold must be a number or a Series indexed by date; got {type(threshold).__name__}.")
    if flags is None:
        with np.errstate(invalid="ignore"):
            flags = pd.Series(np.asarray(scores > threshold), index=scores.index)
    flags = _series(flags, "flags")
    if flags.isna().any():  # astype(bool) would draw every missing flag as a flag
        raise DataError(f"flags holds {int(flags.isna().sum())} missing value(s); give True or False on every date, "
                        "e.g. flags.fillna(False).")
    flags = flags.reindex(scores.index, fill_value=False).astype(bool)
    flagged = scores.index[flags.to_numpy()]

    level = None
    if prices_or_index is not None:
        given = np.asarray(prices_or_index, dtype=np.float64)
        if np.isfinite(given).sum() >= 2 and not looks_like_prices(given):  # returns would draw a meaningless index
            raise DataError("prices_or_index must hold price levels or an index level (positive numbers), not "
                            "returns: pass the prices, or an index level such as equal_weight_index(returns).")
        if isinstance(prices_or_index, pd.DataFrame) and prices_or_index.shape[1] > 1:
            prices = prices_or_index.loc[scores.index[0]: scores.index[-1]]
            if prices.empty:
                raise DataError("prices_or_index has no values on the dates of scores; pass the same period.")
            # Each asset's move from its last price: a move across a missing quote lands on the next quote,
            # as prices_to_returns puts it, instead of being lost.
            simple = prices / prices.ffill().shift(1) - 1.0
            level = _growth(simple.iloc[1:])  # steady prices give steady returns
            level = pd.concat([pd.Series([1.0], index=prices.index[:1]), level])
            level[prices.isna().all(axis=1).to_numpy()] = np.nan  # no price at all that day: a gap, not a flat line
            level_label = "equal-weight index"
        else:
            level = _series(prices_or_index, "prices_or_index").loc[scores.index[0]: scores.index[-1]]
            level = level / level.dropna().iloc[0]
            level_label = str(level.name) if level.name is not None else "index"
        if level.dropna().empty:
            raise DataError("prices_or_index has no values on the dates of scores; pass the same period.")

    if axes is not None:
        what = "plot_scores" if level is None else "plot_scores with prices_or_index (the level, then the score)"
        panels = _given_axes(axes, 1 if level is None else 2, what)
        fig = panels[0].figure
        top, bottom = (None, panels[0]) if level is None else panels
    elif level is None:
        fig, bottom = plt.subplots(figsize=figsize, layout="constrained")
        top = None
    else:
        fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=figsize, layout="constrained",
                                          gridspec_kw={"height_ratios": [1, 1]})
    if top is not None:
        top.plot(level.index, level.to_numpy(), color="tab:gray", lw=1.0, label=level_label,
                 **_line_markers(level))
        known = level.dropna()
        marks = known.reindex(flagged, method="ffill")  # a level on another calendar: its last value before
        marks = marks[marks.index <= known.index[-1]]  # not beyond the level's last date
        top.scatter(marks.index, marks.to_numpy(), color="tab:red", s=14, zorder=3,
                    label=f"flagged date ({len(flagged)})")
        _growth_axis(top, level, "growth of 1")
        top.set_title(title)
        top.legend(loc="best")  # where it hides the fewest points: flags near the start stay visible
        top.grid(alpha=0.3)

    bottom.plot(scores.index, scores.to_numpy(), color="tab:blue", lw=0.5, label=score_label, **_line_markers(scores))
    if isinstance(threshold, pd.Series):
        bottom.step(threshold.index, threshold.to_numpy(), where="post", color="black", lw=1.0, ls="--",
                    label="threshold")
    else:
        bottom.axhline(float(threshold), color="black", lw=1.0, ls="--", label=f"threshold ({threshold:.2f})")
    bottom.scatter(flagged, scores.reindex(flagged).to_numpy(), color="tab:red", s=14, zorder=3,
                   label="flagged (score > threshold)")
    bottom.set_ylabel(f"{score_label} (nats of surprise)")
    # One row of legend above the highest score, so that it hides no flagged date.
    drawn = pd.concat([scores, threshold if isinstance(threshold, pd.Series) else pd.Series([float(threshold)])])
    if drawn.notna().any():
        low, high = min(float(drawn.min()), 0.0), float(drawn.max())
        bottom.set_ylim(low, high + max(0.25 * (high - low), 1.0))
    bottom.legend(loc="upper left", ncol=3)
    bottom.grid(alpha=0.3)
    for ax in (top, bottom):  # the caller's axes need not share their x axis
        if ax is not None:
            _frame_one_date(ax, scores.index)
    if top is None:
        bottom.set_title(title)
    return fig


def plot_factors(
    factors: pd.DataFrame,
    *,
    smooth: int = 21,
    title: str = "FinVAE latent factors over time (posterior means)",
    figsize: tuple[float, float] | None = None,
    axes: Axes | Sequence[Axes] | None = None,
) -> Figure:
    """Each latent factor over time, one panel each, with a rolling mean.

    Parameters
    ----------
    factors : DataFrame of shape (n_dates, n_factors)
        E.g. ``FinVAE.transform(returns)``. NaN rows at the start (the first
        window) and end are left out; NaN rows between (dates with too few
        assets observed) break both lines, the daily values and the rolling
        mean.
    smooth : int, default=21
        Days of the rolling mean drawn over the daily values (0: none).
    title : str
        Title of the figure.
    figsize : (float, float), optional
        Default: 11 inches wide, 2 inches per factor (of a new figure; ignored with ``axes``).
    axes : Axes or sequence of Axes, optional
        Draw into these instead of a new figure: one Axes per factor.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the one that holds ``axes``.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from finvae.plotting import plot_factors
    >>> factors = pd.DataFrame(np.random.default_rng(0).normal(size=(100, 3)), columns=["f0", "f1", "f2"],
    ...                        index=pd.bdate_range("2024-01-01", periods=100))   # e.g. model.transform(returns)
    >>> len(plot_factors(factors).axes)               # one panel per factor
    3
    """
    import matplotlib.pyplot as plt

    if isinstance(factors, pd.Series):
        factors = factors.to_frame()
    if not isinstance(factors, pd.DataFrame):
        raise DataError(f"factors must be a pandas DataFrame (dates × factors); got {type(factors).__name__}.")
    present = np.flatnonzero(factors.notna().any(axis=1).to_numpy())
    if not len(present):
        raise DataError("factors has no values (all NaN or no rows): nothing to plot.")
    # Only the leading and trailing NaN rows go: a gap between dates with factors stays a gap in the lines.
    factors = factors.iloc[present[0]: present[-1] + 1]
    k = factors.shape[1]
    if axes is not None:
        panels = _given_axes(axes, k, "plot_factors (one panel per factor)")
        fig = panels[0].figure
    else:
        fig, grid = plt.subplots(k, 1, sharex=True, squeeze=False, layout="constrained",
                                 figsize=figsize or (11.0, 1.2 + 2.0 * k))
        panels = list(grid[:, 0])
    for ax, name in zip(panels, factors.columns, strict=True):
        values = factors[name]
        ax.plot(values.index, values.to_numpy(), color="tab:blue", lw=0.4, alpha=0.5, label="daily",
                **_line_markers(values))
        if smooth:
            rolling = values.rolling(smooth, min_periods=max(1, smooth // 2)).mean().where(values.notna())
            ax.plot(rolling.index, rolling.to_numpy(), color="tab:blue", lw=1.2, label=f"{smooth}-day mean")
        lone = values.notna() & values.shift(1).isna() & values.shift(-1).isna()  # between gaps: no segment
        if lone.any() and values.notna().sum() >= 2:  # (a single value has its marker already)
            ax.plot(values.index[lone.to_numpy()], values[lone].to_numpy(), "o", color="tab:blue", markersize=2,
                    label="_nolegend_")
        if values.min() < 0.0 < values.max():  # a zero line only where it does not squash the series
            ax.axhline(0.0, color="black", lw=0.6)
        ax.set_ylabel(str(name))
        ax.grid(alpha=0.3)
    panels[0].legend(loc="upper left", ncol=2)
    panels[0].set_title(title)
    for ax in panels:  # the caller's axes need not share their x axis
        _frame_one_date(ax, factors.index)
    return fig


def plot_asset_contributions(
    shares: pd.DataFrame,
    scores: pd.Series,
    top: int = 10,
    *,
    n_assets: int = 8,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Per-asset contributions on the ``top`` most anomalous days, as stacked bars.

    One horizontal bar per day, from the most anomalous down, labelled with its
    date and score. Each bar splits the day's squared residual into the
    assets' shares (``FinVAE.score_assets``, rows summing to 1); each day's
    largest asset and, up to ``n_assets``, those with the largest shares over
    these days get their own colour, and the rest are pooled as "other". A bar
    dominated by one asset is a single-stock event; an even split, a
    market-wide one.

    Parameters
    ----------
    shares : DataFrame of shape (n_dates, n_assets)
        Each asset's share of each date's residual.
    scores : Series
        Anomaly score per date; the ``top`` highest with shares are shown.
    top : int, default=10
        How many days to show.
    n_assets : int, default=8
        Assets drawn in their own colour: each day's largest, then those with
        the largest shares, up to ``n_assets`` in all (more where the days
        have more leaders than that; 20 at most).
    title : str, optional
        Default: "Per-asset contributions on the {top} most anomalous days".
    figsize : (float, float), optional
        Figure size in inches. Default: 11 wide, 6 tall, taller beyond 16 days (of a new figure;
        ignored with ``ax``).
    ax : Axes, optional
        Draw into this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the one that holds ``ax``.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from finvae.plotting import plot_asset_contributions
    >>> rng = np.random.default_rng(0)
    >>> dates = pd.bdate_range("2024-01-01", periods=50)
    >>> squared = pd.DataFrame(rng.exponential(size=(50, 4)), index=dates, columns=list("ABCD"))
    >>> shares = squared.div(squared.sum(axis=1), axis=0)          # e.g. model.score_assets(returns)
    >>> scores = pd.Series(rng.exponential(size=50), index=dates)  # e.g. model.score(returns)
    >>> fig = plot_asset_contributions(shares, scores, top=5)
    >>> type(fig).__name__
    'Figure'
    """
    import matplotlib.pyplot as plt

    if not isinstance(shares, pd.DataFrame):
        raise DataError(f"shares must be a pandas DataFrame (dates × assets); got {type(shares).__name__}.")
    scores = _series(scores, "scores")
    if int(top) != top or top < 1:
        raise ValueError(f"top must be a positive integer; got {top!r}.")
    if int(n_assets) != n_assets or not 1 <= n_assets <= 20:
        raise ValueError(f"n_assets must be an integer from 1 to 20 (colours told apart); got {n_assets!r}.")
    usable = scores.dropna().index.intersection(shares.dropna(how="all").index)
    if len(usable) == 0:
        raise DataError("scores and shares have no dates with values in common; pass the same dates.")
    days = scores.loc[usable].sort_values(ascending=False).index[: int(top)]
    table = shares.loc[days].fillna(0.0)
    # Each day's largest asset is named, so that a pooled "other" never hides a day's leader.
    daily = list(dict.fromkeys(table.idxmax(axis=1)))
    by_total = [a for a in table.sum().sort_values(ascending=False).index if a not in set(daily)]
    leaders = pd.Index((daily + by_total[: max(int(n_assets) - len(daily), 0)])[:20])
    leaders = table[leaders].sum().sort_values(ascending=False, kind="stable").index  # the largest first
    parts = table[leaders]
    pooled = "other" if "other" not in set(map(str, table.columns)) else "(other assets)"  # an asset called other
    if len(leaders) < table.shape[1]:
        parts = parts.assign(**{pooled: table.drop(columns=leaders).sum(axis=1)})

    labels = [f"{d:%Y-%m-%d}  score {scores[d]:.1f}" if isinstance(d, pd.Timestamp) else f"{d}  score {scores[d]:.1f}"
              for d in days]
    if ax is not None:
        (ax,) = _given_axes(ax, 1, "plot_asset_contributions")
        fig = ax.figure
    else:
        fig, ax = plt.subplots(figsize=figsize or (11.0, max(6.0, 1.2 + 0.3 * len(days))), layout="constrained")
    if len(leaders) <= 10:
        palette = list(plt.get_cmap("tab10").colors)
    else:  # tab20 without its greys (one is the grey of "other"), and two of tab20b
        palette = [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i not in (14, 15)]
        palette += list(plt.get_cmap("tab20b").colors[:2])
    colors = list(palette[: len(leaders)]) + ["lightgray"] * (parts.shape[1] - len(leaders))
    rows = np.arange(len(days))[::-1]  # the most anomalous day on top
    left = np.zeros(len(days))
    for color, name in zip(colors, parts.columns, strict=True):
        width = parts[name].to_numpy()
        ax.barh(rows, width, left=left, color=color, edgecolor="white", lw=0.5, label=str(name))
        for y, x0, w in zip(rows, left, width, strict=True):
            if w >= 0.12 and color != "lightgray":  # name the asset inside segments wide enough to hold it
                ax.text(x0 + w / 2, y, str(name), ha="center", va="center", fontsize=8)
        left += width
    ax.set_yticks(rows, labels)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda x, _: f"{x:.0%}"))
    ax.set_xlabel("share of the day's squared residual")
    ax.set_title(title or f"Per-asset contributions on the {len(days)} most anomalous days")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), title="asset")
    return fig


def plot_var_backtest(
    returns: pd.Series,
    value_at_risk: pd.Series,
    *,
    title: str = "Value-at-risk forecast and its exceptions",
    figsize: tuple[float, float] = (11.0, 4.5),
    ax: Axes | None = None,
) -> Figure:
    """A portfolio's daily returns, minus its VaR forecast, and the exceptions marked.

    Parameters
    ----------
    returns : Series
        The portfolio's return on each day: :func:`finvae.risk.portfolio_returns`
        gives the portfolio the VaR is for (a missing return counts as 0), on
        trading days only.
    value_at_risk : Series
        The VaR (a positive loss) *for* each day, i.e. forecast at the previous
        trading day's close: ``var.loc[pnl.index].shift(1)`` with ``pnl`` the
        returns above (a plain ``.shift(1)`` over a calendar with holiday rows
        would pair a VaR with the holiday). Days where either is NaN are left out.
    title : str
        Title of the figure.
    figsize : (float, float), default=(11, 4.5)
        Figure size in inches (of a new figure; ignored with ``ax``).
    ax : Axes, optional
        Draw into this Axes instead of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The new figure, or the one that holds ``ax``. Returns as grey bars,
        ``-VaR`` as a line, and the days that lost more than the VaR as red
        dots; the legend gives their count and share.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from finvae.plotting import plot_var_backtest
    >>> dates = pd.bdate_range("2024-01-01", periods=250)
    >>> pnl = pd.Series(np.random.default_rng(0).normal(0.0, 0.01, size=250), index=dates)
    >>> var = pd.Series(0.0233, index=dates)          # a constant 99 % VaR of a 1 % daily volatility
    >>> fig = plot_var_backtest(pnl, var)
    >>> fig.axes[0].get_title()
    'Value-at-risk forecast and its exceptions'
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    returns = _series(returns, "returns")
    value_at_risk = _series(value_at_risk, "value_at_risk").reindex(returns.index)
    ok = returns.notna() & value_at_risk.notna()
    if not ok.any():
        raise DataError("returns and value_at_risk share no date with both values: nothing to plot.")
    returns, value_at_risk = returns[ok], value_at_risk[ok]
    exceptions = -returns > value_at_risk
    own_figure = ax is None
    if own_figure:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        (ax,) = _given_axes(ax, 1, "plot_var_backtest")
        fig = ax.figure
    ax.vlines(returns.index, 0.0, returns.to_numpy(), color="0.6", linewidth=0.5, label="daily return")
    ax.plot(value_at_risk.index, -value_at_risk.to_numpy(), color="C0", linewidth=0.9, label="minus VaR",
            **_line_markers(value_at_risk))
    ax.scatter(returns.index[exceptions.to_numpy()], returns[exceptions].to_numpy(), color="C3", s=10, zorder=3,
               label=f"exceptions: {int(exceptions.sum())} of {len(returns)} days ({exceptions.mean():.2%})")
    ax.axhline(0.0, color="0.3", linewidth=0.5)
    ax.set_title(title)
    ax.set_ylabel("daily return, as given (%)")  # log or simple: the VaR is in the same units
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    _frame_one_date(ax, returns.index)
    if own_figure:  # the caller's figure keeps its own layout
        fig.tight_layout()
    return fig
