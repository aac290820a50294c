"""Concept vectors in a VAE's latent space: stress scenarios and the stylized facts of synthetic returns.

A VAE's latent space is continuous and, thanks to the KL term, laid out like
its prior: directions in it carry meaning. The course's example adds a "smile
vector" (mean code of smiling faces minus mean code of the others) to a face's
code. For markets the same arithmetic gives a *crisis vector*: the mean daily
code of a crisis period minus that of the other dates, which moves a calm
window towards the crisis when added to its codes and decoded.

Three tools:

- :func:`concept_vector` (on a fitted :class:`~finvae.FinVAE`) and
  :func:`latent_concept` (on any codes, e.g. MNIST digits): the vector, its
  norm, block-bootstrap intervals, and a noise baseline (the norm that the same
  mask, shifted to random other dates, gets) that says whether it is real;
- :func:`stress_scenarios`: a window's codes moved along a vector, decoded into
  returns, with per-asset and portfolio P&L and a side-by-side plot; with
  ``n_paths``, a distribution instead: paths simulated from the date's state
  (:mod:`finvae.simulation`) with every simulated day's code moved, and the
  quantiles of their P&L;
- :func:`stylized_facts`: real against synthetic windows (tails, volatility
  clustering, cross-asset correlation, and a classifier two-sample test).

Examples
--------
>>> from finvae import FinVAE
>>> from finvae.concepts import concept_vector, stress_scenarios
>>> from finvae.datasets import load_sp500_sample, prices_to_returns
>>> returns = prices_to_returns(load_sp500_sample())
>>> model = FinVAE(random_state=0, verbose=0).fit(returns.loc[:"2019"])
>>> crisis = concept_vector(model, returns, (returns.index >= "2008-09") & (returns.index < "2009-04"))
>>> scenarios = stress_scenarios(model, returns, crisis, at="2019-12-31")
>>> scenarios.pnl["portfolio"]    # one row per strength
strength
0.0    0.037940
1.0    0.012784
2.0   -0.011687
3.0   -0.035493
Name: portfolio, dtype: float64
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedKFold, cross_val_score
from threadpoolctl import threadpool_limits

from finvae._exceptions import DataError
from finvae._validation import as_date_of, check_returns, day_label

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from numpy.typing import ArrayLike
    from sklearn.base import ClassifierMixin

    from finvae.estimator import FinVAE
    from finvae.simulation import Dynamics

__all__ = [
    "ConceptVector",
    "StressScenarios",
    "concept_vector",
    "latent_concept",
    "return_windows",
    "shift_codes",
    "stress_scenarios",
    "stylized_facts",
]

#: Two-sided level of the bootstrap intervals and of the noise baseline.
LEVEL = 0.95


# --------------------------------------------------------------------------- concept vectors


@dataclass(frozen=True, repr=False)
class ConceptVector:
    """A direction in latent space: mean code where a mask holds minus mean code where it does not.

    Attributes
    ----------
    vector : Series
        ``mean(z | mask) - mean(z | ~mask)``, one value per latent dimension.
    norm : float
        Its Euclidean norm, in units of the prior's standard deviation (codes
        follow N(0, I) under the prior, so 1 is one prior standard deviation).
    interval : DataFrame
        Bootstrap percentile interval (columns ``lower``, ``upper``) of each
        component and of the norm (last row, ``"norm"``).
    null_norms : ndarray
        Norms of the noise baseline: the same mask on random other dates.
    threshold : float
        The 95 % quantile of ``null_norms``: the norm that noise stays below
        19 times in 20.
    p_value : float
        ``(1 + #{null >= norm}) / (1 + n_null)``; :attr:`significant` when at
        most 0.05.
    n_in, n_out : int
        Codes where the mask holds and where it does not.
    block : int
        Block length of the bootstrap and kind of baseline (1: i.i.d. codes,
        resampled one by one and compared with random permutations of the
        mask; > 1: codes of overlapping windows, resampled in blocks and
        compared with circular shifts of the mask).
    """

    vector: pd.Series
    norm: float
    interval: pd.DataFrame
    null_norms: np.ndarray = field(repr=False)
    threshold: float
    p_value: float
    n_in: int
    n_out: int
    block: int

    @property
    def significant(self) -> bool:
        """Whether the direction is real: ``p_value <= 0.05`` against the noise baseline."""
        return bool(self.p_value <= 1 - LEVEL)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.vector.to_numpy(), dtype=dtype)

    def __repr__(self) -> str:
        table = pd.concat([self.vector.rename("value"), self.interval], axis=1)
        table.loc["norm", "value"] = self.norm
        verdict = "a real direction" if self.significant else "not distinguishable from noise"
        baseline = "permuted" if self.block == 1 else "circularly shifted"
        interval = "bootstrap interval" if self.block == 1 else f"block-bootstrap interval, block={self.block}"
        return (
            f"ConceptVector ({self.n_in} codes in the mask vs {self.n_out} outside; "
            f"{LEVEL:.0%} {interval})\n"
            f"{table.to_string(float_format=lambda v: f'{v: .4f}')}\n"
            f"noise baseline ({baseline} mask): {LEVEL:.0%} of norms below {self.threshold:.4f}; "
            f"p = {self.p_value:.3f} -> {verdict}"
        )


def latent_concept(
    codes: pd.DataFrame | ArrayLike,
    mask: pd.Series | ArrayLike,
    *,
    n_boot: int = 200,
    block: int = 1,
    random_state: int | np.random.Generator | None = None,
) -> ConceptVector:
    r"""Concept vector of any latent codes: mean code where ``mask`` holds minus mean code elsewhere.

    .. math::

        v = \frac{1}{|M|}\sum_{i \in M} z_i - \frac{1}{|\bar M|}\sum_{i \notin M} z_i

    Uncertainty comes from a (moving-)block bootstrap: blocks of ``block``
    consecutive rows of ``(z_i, mask_i)`` are drawn with replacement and ``v``
    recomputed; the percentile interval of each component and of ``|v|`` is
    reported. Since ``|v|`` is biased upwards by noise (a noisy vector is never
    shorter than zero on average), whether the direction is real is judged
    against a noise baseline instead: ``|v|`` of the same mask moved to other
    rows, by random permutation (``block=1``, i.i.d. codes such as images) or
    by a random circular shift, which keeps the mask's runs and the codes'
    autocorrelation (``block > 1``, codes of overlapping windows).

    Parameters
    ----------
    codes : array-like of shape (n, latent_dim) or DataFrame
        One code per row, e.g. posterior means. Rows with a NaN are dropped.
    mask : array-like of bool of shape (n,) or Series
        True for the rows of the concept. A Series is aligned on ``codes``'s
        index (and must have the same labels when ``codes`` is a DataFrame).
    n_boot : int, default=200
        Bootstrap draws, and draws of the noise baseline.
    block : int, default=1
        Block length: 1 for independent rows, about the window length for
        codes of overlapping windows.
    random_state : int, Generator or None
        Seed of the bootstrap and baseline.

    Returns
    -------
    ConceptVector

    Examples
    --------
    The course's digit demo, with a fitted MNIST VAE ``vae`` whose encoder gives
    means ``z`` (n, latent_dim) for images with ``labels``::

        v = latent_concept(z[(labels == 1) | (labels == 7)], labels[(labels == 1) | (labels == 7)] == 7)
        moved = shift_codes(z[labels == 4], v, strengths=[0, 0.5, 1])   # (3, n_fours, latent_dim)
        images = torch.sigmoid(vae.decode(moved[-1]))                   # the fours moved all the way
    """
    z, m, names = _codes_and_mask(codes, mask)
    if n_boot < 1:
        raise DataError(f"n_boot must be at least 1; got {n_boot}.")
    if block < 1:
        raise DataError(f"block must be at least 1; got {block}.")
    rng = np.random.default_rng(random_state)
    vector = _difference(z, m)
    norm = float(np.linalg.norm(vector))

    n = len(z)
    block = min(block, n)
    boot = []
    for _ in range(n_boot):
        # Moving-block bootstrap: ceil(n / block) blocks at random starts, cut to n rows.
        starts = rng.integers(0, n - block + 1, size=-(-n // block))
        rows = (starts[:, None] + np.arange(block)).ravel()[:n]
        if 0 < m[rows].sum() < n:  # a draw with one side empty says nothing: skip it
            boot.append(_difference(z[rows], m[rows]))
    boot = np.asarray(boot).reshape(-1, z.shape[1])
    tails = [(1 - LEVEL) / 2, (1 + LEVEL) / 2]
    with np.errstate(all="ignore"):
        bounds = np.quantile(boot, tails, axis=0).T if len(boot) else np.full((z.shape[1], 2), np.nan)
        norm_bounds = np.quantile(np.linalg.norm(boot, axis=1), tails) if len(boot) else [np.nan, np.nan]
    interval = pd.DataFrame(np.vstack([bounds, norm_bounds]), index=[*names, "norm"], columns=["lower", "upper"])

    null = np.empty(n_boot)
    for i in range(n_boot):
        if block == 1:
            moved = rng.permutation(m)
        else:
            # A shift of at least one block, so that the moved mask is not the mask itself.
            moved = np.roll(m, rng.integers(block, max(block + 1, n - block + 1)))
        null[i] = np.linalg.norm(_difference(z, moved))
    threshold = float(np.quantile(null, LEVEL))
    return ConceptVector(
        vector=pd.Series(vector, index=names, name="vector"),
        norm=norm,
        interval=interval,
        null_norms=null,
        threshold=threshold,
        p_value=float((1 + np.sum(null >= norm)) / (1 + n_boot)),
        n_in=int(m.sum()),
        n_out=int((~m).sum()),
        block=block,
    )


def concept_vector(
    model: FinVAE,
    returns: pd.DataFrame,
    mask: pd.Series | ArrayLike,
    *,
    n_boot: int = 200,
    random_state: int | np.random.Generator | None = None,
) -> ConceptVector:
    """Concept vector of a date mask in a fitted FinVAE's latent space.

    Each date's code is the posterior mean of the window ending on it
    (:meth:`FinVAE.encode`); dates without a code (the first ``window - 1``,
    too few assets) are left out. The vector is the mean code of the masked
    dates minus that of the others (:func:`latent_concept`), with a block
    bootstrap and a circular-shift noise baseline, both with blocks of
    ``model.window`` days because neighbouring codes share most of their window.

    Parameters
    ----------
    model : FinVAE
        Fitted.
    returns : DataFrame of shape (n_days, n_assets)
        Daily returns with the model's assets. Pass the whole history, not
        just the masked dates: codes depend on the trailing volatility, which
        starts afresh at the first row.
    mask : Series of bool aligned to ``returns.index``, or bool array of length ``n_days``
        True on the dates of the concept (a crisis period, flagged anomaly days...).
    n_boot : int, default=200
        Bootstrap draws and noise-baseline draws.
    random_state : int, Generator or None
        Seed of the bootstrap and baseline.

    Returns
    -------
    ConceptVector
        Print it for the vector, its intervals and the verdict against noise.

    Examples
    --------
    >>> from finvae.concepts import concept_vector
    >>> in_crisis = (returns.index >= "2008-09") & (returns.index < "2009-04")   # doctest: +SKIP
    >>> crisis = concept_vector(model, returns, in_crisis)       # doctest: +SKIP
    >>> crisis.vector.shape                                      # doctest: +SKIP
    (3,)
    """
    _check_frame(returns)
    m = _date_mask(mask, returns.index)
    means, _ = model.encode(returns)
    has_code = means.notna().all(axis=1).to_numpy()
    return latent_concept(means[has_code], m[has_code], n_boot=n_boot, block=model.window,
                          random_state=random_state)


def shift_codes(codes: ArrayLike, vector: ConceptVector | ArrayLike, strengths: ArrayLike) -> np.ndarray:
    """Codes moved along a vector: ``codes + s * vector`` for each strength ``s``.

    Parameters
    ----------
    codes : array-like of shape (..., latent_dim)
    vector : array-like of shape (latent_dim,) or ConceptVector
    strengths : sequence of float

    Returns
    -------
    moved : ndarray of shape (len(strengths), ..., latent_dim)

    Examples
    --------
    >>> import numpy as np
    >>> from finvae.concepts import shift_codes
    >>> moved = shift_codes(np.zeros((5, 3)), np.array([1.0, 0.0, -1.0]), strengths=[0, 0.5, 1])
    >>> moved.shape
    (3, 5, 3)
    >>> moved[2, 0].tolist()
    [1.0, 0.0, -1.0]
    """
    z = np.asarray(codes, dtype=np.float64)
    v = np.asarray(vector, dtype=np.float64)
    if v.ndim != 1 or v.shape[0] != z.shape[-1]:
        raise DataError(f"the vector has shape {v.shape}; codes have {z.shape[-1]} values each: "
                        f"pass a vector of shape ({z.shape[-1]},).")
    s = np.asarray(strengths, dtype=np.float64).reshape((-1,) + (1,) * z.ndim)
    return z + s * v


# --------------------------------------------------------------------------- stress scenarios


@dataclass(frozen=True, repr=False)
class StressScenarios:
    """Return windows decoded from codes moved along a vector, and their P&L.

    Attributes
    ----------
    windows : DataFrame
        Tidy: columns ``strength``, ``day`` (1 .. window), ``date`` (the date of
        that day in the original window), ``asset``, ``return``.
    pnl : DataFrame
        One row per strength: each asset's return over the window and the
        portfolio's (column ``portfolio``), as simple returns (0.05 = +5 %).
    weights : Series
        Portfolio weights per asset.
    at : Timestamp
        Last date of the window (simulated scenarios: the date the paths start after).
    kind : {"log", "simple"}
        How the returns are defined.
    quantiles : DataFrame or None
        Simulated scenarios only: one row per strength, one column per
        quantile level, the portfolio's P&L over the horizon (simple returns).
    paths : ndarray of shape (n_strengths, n_paths, horizon) or None
        Simulated scenarios only: each path's cumulative portfolio return, day by day.
    """

    windows: pd.DataFrame
    pnl: pd.DataFrame
    weights: pd.Series
    at: pd.Timestamp
    kind: str
    quantiles: pd.DataFrame | None = None
    paths: np.ndarray | None = None

    def __repr__(self) -> str:
        if self.quantiles is not None:
            return (
                f"StressScenarios: {self.paths.shape[1]} simulated paths of {self.paths.shape[2]} days after "
                f"{day_label(self.at)} per strength ({self.kind} returns); quantiles of the portfolio's P&L:\n"
                f"{self.quantiles.to_string(float_format=lambda v: f'{v: .2%}')}"
            )
        return (
            f"StressScenarios of the window ending {day_label(self.at)} ({self.kind} returns); "
            f"P&L over the window, simple returns:\n"
            f"{self.pnl.to_string(float_format=lambda v: f'{v: .2%}')}"
        )

    def cumulative(self) -> pd.DataFrame:
        """Cumulative simple return of each asset and of the portfolio, per strength and day (wide)."""
        wide = self.windows.pivot_table(index=["strength", "day"], columns="asset", values="return", sort=False)
        wide = wide[self.weights.index]
        growth = np.exp(wide.groupby(level="strength").cumsum()) if self.kind == "log" \
            else (1 + wide).groupby(level="strength").cumprod()
        out = growth - 1
        out["portfolio"] = (growth * self.weights).sum(axis=1) / self.weights.sum() - 1
        return out

    def plot(self, *, axes: Axes | Sequence[Axes] | np.ndarray | None = None) -> Figure:
        """Scenarios side by side: cumulative return of each asset (grey) and of the portfolio (black).

        The finance analogue of the course's smile-vector figure: one panel per
        strength, from the plain reconstruction (0) to the window pushed along
        the vector. Simulated scenarios are drawn as bands of the portfolio's
        paths from day 0 (0 %). With ``axes`` (one per strength), it draws into
        them and leaves the figure's title and layout to the caller.

        Returns
        -------
        fig : matplotlib Figure
        """
        import matplotlib.pyplot as plt

        cumulative = self.cumulative()
        strengths = cumulative.index.unique(level="strength")
        own_figure = axes is None
        if own_figure:
            fig, axes = plt.subplots(1, len(strengths), figsize=(3.2 * len(strengths), 3.2), sharey=True,
                                     squeeze=False)
            axes = axes[0]
        else:
            from finvae.plotting import _given_axes

            axes = _given_axes(axes, len(strengths), "StressScenarios.plot (one panel per strength)")
            fig = axes[0].figure
        for number, (ax, strength) in enumerate(zip(axes, strengths, strict=True)):
            panel = cumulative.xs(strength, level="strength")
            if self.paths is None:
                ax.plot(panel.index, panel.drop(columns="portfolio") * 100, color="0.7", lw=0.8)
                ax.plot(panel.index, panel["portfolio"] * 100, color="k", lw=2, label="portfolio")
                ax.set_title(f"strength {strength:g}: {panel['portfolio'].iloc[-1]:+.1%}")
            else:  # bands of the simulated portfolio paths: 1-99 % and 5-95 %, and the median
                bands = np.quantile(self.paths[number], [0.01, 0.05, 0.5, 0.95, 0.99], axis=0) * 100
                # From day 0 (0 %, the start of every path): a one-day horizon still draws its spread.
                bands = np.hstack([np.zeros((len(bands), 1)), bands])
                days = np.arange(bands.shape[1])
                ax.fill_between(days, bands[0], bands[4], color="0.85", label="1-99 %")
                ax.fill_between(days, bands[1], bands[3], color="0.65", label="5-95 %")
                ax.plot(days, bands[2], color="k", lw=2, label="median")
                # From the bands drawn, whatever quantiles the scenarios tabulate.
                ax.set_title(f"strength {strength:g}: 5 % {bands[1, -1] / 100:+.1%}, median {bands[2, -1] / 100:+.1%}",
                             fontsize=9)
            ax.axhline(0, color="0.4", lw=0.5)
            ax.set_xlabel("day")
        axes[0].set_ylabel("cumulative return (%)")
        axes[0].legend(loc="lower left", frameon=False)
        if own_figure:  # the caller's figure keeps its own title and layout
            fig.suptitle(f"Window ending {day_label(self.at)} moved along the vector" if self.paths is None else
                         f"Paths after {day_label(self.at)} with the codes moved along the vector (portfolio)")
            fig.tight_layout()
        return fig


def stress_scenarios(
    model: FinVAE,
    returns: pd.DataFrame,
    vector: ConceptVector | ArrayLike,
    strengths: ArrayLike = (0, 1, 2, 3),
    *,
    at: pd.Timestamp | str | None = None,
    weights: pd.Series | ArrayLike | None = None,
    units: Literal["at", "daily"] = "at",
    volatility: pd.Series | ArrayLike | None = None,
    kind: Literal["log", "simple"] = "log",
    n_paths: int | None = None,
    horizon: int | None = None,
    random_state: int | np.random.Generator | None = None,
    dynamics: Dynamics | None = None,
    quantiles: ArrayLike = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99),
) -> StressScenarios:
    r"""The window ending on ``at``, moved along a latent vector and decoded into returns.

    Let ``z_1 .. z_W`` be the codes of the window's days (each day's own
    window's posterior mean, :meth:`FinVAE.encode`). For each strength ``s``
    the scenario is

    .. math::

        r^{(s)}_d = \mu + \sigma \odot \mathrm{dec}(z_d + s\,v), \qquad d = 1..W,

    with ``mu`` the training mean and ``sigma`` each asset's trailing
    volatility known on ``at`` (``units="at"``: the scenario is read in
    today's risk) or on each day ``d`` (``units="daily"``: strength 0 is then
    exactly :meth:`FinVAE.reconstruct` on the window's dates), or a given
    ``volatility``. Strength 0 is the plain reconstruction of the window.

    The model reads returns in units of their trailing volatility, so a
    vector in its latent space moves *surprises*: the direction, dispersion
    and co-movement of returns relative to recent risk, not the level of
    volatility itself. To ask "and if volatility were also that of the
    crisis", pass that ``volatility`` (e.g. ``model.volatility(returns).loc[day]``).

    **Simulated scenarios** (``n_paths`` given): a scenario is a distribution
    of paths rather than one decoded window. :meth:`FinVAE.simulate` runs
    ``n_paths`` paths of ``horizon`` days after ``at`` from that date's state
    (its code and trailing volatilities), with every simulated day's code
    moved by ``s * v`` before decoding; the volatility then reacts to the
    stressed returns as it does to any others (:mod:`finvae.simulation`), so
    ``units`` and ``volatility`` do not apply (passing them is an error). Every strength uses the same
    random draws, so that the strengths differ by the shift only. ``pnl``
    then holds the median P&L over the paths (each asset's and the
    portfolio's), ``quantiles`` the portfolio's P&L quantiles, ``paths`` each
    path's cumulative portfolio return, and ``windows`` the mean simulated
    return of each day (dated on the business days after ``at``).

    P&L is buy and hold over the window: asset ``i`` returns
    :math:`g_i - 1` with :math:`g_i = \exp(\sum_d r_{d,i})` (log returns) or
    :math:`\prod_d (1 + r_{d,i})` (simple), and the portfolio
    :math:`\sum_i w_i (g_i - 1) / \sum_i w_i`.

    Parameters
    ----------
    model : FinVAE
        Fitted.
    returns : DataFrame of shape (n_days, n_assets)
        Daily returns with the model's assets, up to and including ``at``
        (later rows are ignored by the causal model but allowed).
    vector : ConceptVector or array-like of shape (latent_dim,)
        The direction, e.g. from :func:`concept_vector`.
    strengths : sequence of float, default=(0, 1, 2, 3)
        Multiples of ``vector`` to add.
    at : date-like, default=None
        Last date of the window; default: the last date of ``returns``.
        The window's first day needs a window of its own, so ``at`` must have
        at least ``2 * window - 1`` rows up to it.
    weights : Series or array-like of shape (n_assets,), default=None
        Portfolio weights (default: equal). Normalised by their sum.
    units : {"at", "daily"}, default="at"
        Whose trailing volatility to read the decoded returns in (see above).
    volatility : Series or array-like of shape (n_assets,), default=None
        Read the decoded returns in this volatility per asset instead of
        ``units``'s (a Series is matched to the assets by name).
    kind : {"log", "simple"}, default="log"
        Whether ``returns`` are log or simple returns (for compounding the P&L).
    n_paths : int, default=None
        Simulate this many paths per strength (None: move and decode the window ending on ``at``).
    horizon : int, default=None
        Days per simulated path (default: the model's window).
    random_state : int or None, default=None
        Seed of the simulation.
    dynamics : finvae.simulation.Dynamics, default=None
        The dynamic prior to simulate with (default: learned from ``returns`` up to ``at``).
    quantiles : sequence of float
        Quantile levels of the simulated portfolio P&L to report.

    Returns
    -------
    StressScenarios
        ``.windows`` (tidy), ``.pnl``, ``.cumulative()``, ``.plot()``; and for
        simulated scenarios ``.quantiles`` and ``.paths``.

    Examples
    --------
    With ``crisis`` from :func:`concept_vector` (module docstring), 1,000 paths of 20 days after
    2019-12-31 per strength:

    >>> scenarios = stress_scenarios(model, returns, crisis, at="2019-12-31", n_paths=1000,
    ...                              horizon=20, random_state=0)     # doctest: +SKIP
    >>> scenarios.quantiles.shape               # 4 strengths x 7 quantile levels  # doctest: +SKIP
    (4, 7)
    >>> fig = scenarios.plot()                                       # doctest: +SKIP
    """
    _check_frame(returns)
    if units not in ("at", "daily"):
        raise DataError(f"units must be 'at' or 'daily'; got {units!r}.")
    if kind not in ("log", "simple"):
        raise DataError(f"kind must be 'log' or 'simple'; got {kind!r}.")
    w = model.window
    if at is None:
        at = returns.index[-1]
    elif isinstance(returns.index, pd.DatetimeIndex):
        at = as_date_of(returns.index, at, "at")  # a plain date, read in the index's time zone
    if at not in returns.index:
        before = returns.index[returns.index <= at]
        hint = f" The last date before it is {before[-1]}." if len(before) else ""
        raise DataError(f"at={at} is not a date of returns.{hint} Pass a trading date.")
    end = returns.index.get_loc(at)
    strengths = _check_strengths(strengths)
    vector = _as_vector(vector, model.latent_dim)
    if n_paths is not None and (volatility is not None or units != "at"):
        raise DataError("volatility= and units= set the volatility of the decoded window; simulated scenarios "
                        "(n_paths) drive their own volatility forward from the state at `at`. Leave them out, or "
                        "leave out n_paths for the decoded window.")
    if n_paths is not None:
        return _simulated_scenarios(model, returns.iloc[: end + 1], vector, strengths, weights, kind, n_paths,
                                    w if horizon is None else horizon, random_state, dynamics, quantiles)
    if end < 2 * (w - 1):
        first = day_label(returns.index[2 * (w - 1)]) if len(returns) > 2 * (w - 1) else "(none: too few rows)"
        raise DataError(
            f"at={day_label(at)} is before the first full window: each of the {w} days of the window needs a "
            f"window of its own, so at needs {2 * w - 1} rows up to it (it has {end + 1}). "
            f"The first possible date is {first}; pass a later at or more history."
        )
    history = returns.iloc[: end + 1]
    means, _ = model.encode(history)
    codes = means.iloc[-w:]
    if codes.isna().any(axis=None):
        missing = codes.index[codes.isna().any(axis=1)]
        raise DataError(
            f"{len(missing)} day(s) of the window ending {day_label(at)} have no code (fewer than "
            f"min_coverage={model.min_coverage:.0%} of assets observed), e.g. {day_label(missing[0])}. "
            "Pick another at, or refit the model with a lower min_coverage."
        )
    if volatility is not None:
        sigma = _per_asset(volatility, returns.columns, "volatility")
    else:
        trailing = model.volatility(history)
        sigma = trailing.iloc[-1].to_numpy() if units == "at" else trailing.iloc[-w:].to_numpy()
    moved = shift_codes(codes.to_numpy(), vector, strengths)
    decoded = model.decode(moved, volatility=sigma)  # (n_strengths, window, n_assets)

    assets = pd.Index(returns.columns, name="asset")
    weights = _weights(weights, assets)
    index = pd.MultiIndex.from_product([strengths, range(1, w + 1), assets], names=["strength", "day", "asset"])
    windows = pd.DataFrame({"return": decoded.ravel()}, index=index).reset_index()
    windows.insert(2, "date", np.tile(np.repeat(codes.index.to_numpy(), len(assets)), len(strengths)))

    growth = np.exp(decoded.sum(axis=1)) if kind == "log" else np.prod(1 + decoded, axis=1)
    pnl = pd.DataFrame(growth - 1, index=pd.Index(strengths, name="strength"), columns=assets)
    pnl["portfolio"] = (pnl[assets] * weights).sum(axis=1)
    return StressScenarios(windows=windows, pnl=pnl, weights=weights, at=at, kind=kind)


def _simulated_scenarios(model, history, vector, strengths, weights, kind, n_paths, horizon, random_state,
                         dynamics, quantiles) -> StressScenarios:
    """Stress scenarios as distributions: simulated paths after the last date, codes moved along the vector."""
    from finvae import simulation

    v = vector  # checked by stress_scenarios
    levels = [float(q) for q in np.atleast_1d(quantiles)]
    if not all(0 <= q <= 1 for q in levels):
        raise DataError(f"quantiles must lie between 0 and 1; got {levels}.")
    dynamics, codes, variances = simulation.starting_states(model, history, n_paths, dynamics)
    assets = pd.Index(history.columns, name="asset")
    weights = _weights(weights, assets)
    at = history.index[-1]
    seed = int(np.random.default_rng(random_state).integers(0, 2**32 - 1))
    means, medians, bands, cumulative = [], [], [], []
    for s in strengths:
        paths = simulation.simulate_from_states(model, dynamics, codes, variances, horizon, seed, shift=s * v)
        growth = np.exp(np.cumsum(paths, axis=1, dtype=np.float64)) if kind == "log" \
            else np.cumprod(1 + paths.astype(np.float64), axis=1)
        portfolio = (growth - 1) @ weights.to_numpy()  # (n_paths, horizon)
        cumulative.append(portfolio.astype(np.float32))
        medians.append(np.r_[np.median(growth[:, -1] - 1, axis=0), np.median(portfolio[:, -1])])
        bands.append(np.quantile(portfolio[:, -1], levels))
        means.append(paths.mean(axis=0, dtype=np.float64))
    pnl = pd.DataFrame(medians, index=pd.Index(strengths, name="strength"), columns=[*assets, "portfolio"])
    table = pd.DataFrame(bands, index=pnl.index, columns=pd.Index(levels, name="quantile"))
    dates = pd.bdate_range(at + pd.offsets.BDay(1), periods=horizon) if isinstance(at, pd.Timestamp) \
        else pd.RangeIndex(horizon)
    index = pd.MultiIndex.from_product([strengths, range(1, horizon + 1), assets], names=["strength", "day", "asset"])
    windows = pd.DataFrame({"return": np.ravel(means)}, index=index).reset_index()
    windows.insert(2, "date", np.tile(np.repeat(np.asarray(dates), len(assets)), len(strengths)))
    return StressScenarios(windows=windows, pnl=pnl, weights=weights, at=at, kind=kind, quantiles=table,
                           paths=np.stack(cumulative))


# --------------------------------------------------------------------------- stylized facts


def return_windows(returns: pd.DataFrame | ArrayLike, window: int, *, stride: int | None = None) -> np.ndarray:
    """Windows of consecutive days of a returns table, as an array like :meth:`FinVAE.sample`'s.

    Parameters
    ----------
    returns : DataFrame or array-like of shape (n_days, n_assets)
    window : int
        Days per window.
    stride : int, default=None
        Days between window starts; default ``window`` (non-overlapping
        windows, so that no day counts twice in pooled statistics).

    Returns
    -------
    windows : ndarray of shape (n_windows, window, n_assets)
        Windows holding a NaN are dropped.

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> from finvae.concepts import return_windows
    >>> returns = pd.DataFrame(np.random.default_rng(0).normal(0, 0.01, size=(100, 4)))
    >>> return_windows(returns, 20).shape
    (5, 20, 4)
    >>> return_windows(returns, 20, stride=5).shape
    (17, 20, 4)
    """
    for name, value in (("window", window), ("stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, Integral) or value < 1):
            raise DataError(f"{name} must be a whole number of days ≥ 1; got {value!r}.")
    values, _, _ = check_returns(returns, window=window)
    stride = window if stride is None else stride
    starts = np.arange(0, len(values) - window + 1, stride)
    windows = values[starts[:, None] + np.arange(window)]
    return windows[~np.isnan(windows).any(axis=(1, 2))]


def stylized_facts(
    real: pd.DataFrame | ArrayLike,
    synthetic: pd.DataFrame | ArrayLike,
    *,
    lags: Iterable[int] | None = None,
    quantiles: Iterable[float] = (0.01, 0.05, 0.95, 0.99),
    classifier: ClassifierMixin | None = None,
    cv: int = 5,
    random_state: int | None = 0,
) -> pd.DataFrame:
    r"""Compare real and synthetic return windows on the stylized facts of returns.

    Both inputs are windows (n, window, n_assets) of returns in the same units
    (a DataFrame of daily returns is cut into non-overlapping windows of the
    other input's length, :func:`return_windows`). Statistics are computed per
    asset on the pooled days of all windows, then averaged over assets:

    - **distribution**: excess kurtosis :math:`m_4 / m_2^2 - 3` (moments about
      the mean, no small-sample correction) and the ``quantiles`` of returns;
    - **volatility clustering**: for each lag ``k``, the Pearson correlation of
      :math:`|r_{t,i}|` and :math:`|r_{t+k,i}|` over all pairs of days ``k``
      apart *within the same window* (both inputs are treated alike, whatever
      their windows' order);
    - **correlation**: the mean off-diagonal cross-asset correlation of each,
      and the distance between the two correlation matrices, the root mean
      square of the differences of their off-diagonal entries (0: identical);
    - **two-sample test**: accuracy of a classifier telling real from
      synthetic windows, ``cv``-fold stratified cross-validated, on balanced
      classes (the larger input is subsampled): 0.5 means the classifier
      cannot tell them apart, 1.0 that it always can. Features: the flattened
      window, each asset's volatility over the window, and each day's
      cross-sectional mean and dispersion. Default classifier: a small
      gradient-boosted tree ensemble.

    Parameters
    ----------
    real, synthetic : array-like of shape (n, window, n_assets), or DataFrame (n_days, n_assets)
    lags : iterable of int, default=None
        Lags of the autocorrelation of absolute returns (each below the window length); default 1 to 10, or
        to ``window - 1`` for shorter windows.
    quantiles : iterable of float, default=(0.01, 0.05, 0.95, 0.99)
    classifier : sklearn classifier, default=None
        Cloned before use; ``None`` for the default.
    cv : int, default=5
        Folds of the two-sample test (0: skip it).
    random_state : int or None, default=0
        Seed of the subsampling, the folds and the default classifier.

    Returns
    -------
    facts : DataFrame
        Tidy, one row per fact: columns ``group``, ``fact``, ``real``,
        ``synthetic``. For the correlation distance and the classifier
        accuracy, ``real`` holds the ideal value (0 and 0.5, real against
        itself) and ``synthetic`` the measured one. ``facts.attrs`` holds the
        classifier's fold accuracies, the windows compared, and the half-width
        of the accuracy's 95 % chance band, ``2 * sqrt(0.25 / n)``.

    Examples
    --------
    Fat-tailed "real" windows against Gaussian "synthetic" ones (``cv=0`` skips the classifier):

    >>> import numpy as np
    >>> from finvae.concepts import stylized_facts
    >>> rng = np.random.default_rng(0)
    >>> real = 0.01 * rng.standard_t(3, size=(200, 20, 5))
    >>> synthetic = rng.normal(0.0, 0.01, size=(200, 20, 5))
    >>> facts = stylized_facts(real, synthetic, cv=0)
    >>> kurtosis = facts.set_index("fact").loc["excess kurtosis"]
    >>> bool(kurtosis["real"] > 10 > kurtosis["synthetic"])
    True
    """
    real, synthetic = _as_windows(real, synthetic)
    window = real.shape[1]
    lags = list(range(1, min(11, window))) if lags is None else [int(k) for k in lags]
    if any(k < 1 or k >= window for k in lags):
        raise DataError(f"lags must lie between 1 and window - 1 = {window - 1}; got {lags}.")
    rows = []
    facts = {name: _facts(x, lags, quantiles) for name, x in (("real", real), ("synthetic", synthetic))}
    for key in facts["real"]:
        group, fact = key
        rows.append((group, fact, facts["real"][key], facts["synthetic"][key]))
    distance = _correlation_distance(real, synthetic)
    rows.append(("correlation", "correlation matrix distance (RMS)", 0.0, distance))
    attrs = {"n_real": len(real), "n_synthetic": len(synthetic)}
    if cv:
        scores, n = _two_sample(real, synthetic, classifier, cv, random_state)
        rows.append(("two-sample", "classifier accuracy", 0.5, float(np.mean(scores))))
        attrs.update(fold_accuracy=scores.tolist(), n_per_class=n, chance_band=2 * np.sqrt(0.25 / (2 * n)))
    table = pd.DataFrame(rows, columns=["group", "fact", "real", "synthetic"])
    table.attrs.update(attrs)
    return table


# --------------------------------------------------------------------------- helpers


def _check_frame(returns) -> None:
    if not isinstance(returns, pd.DataFrame):
        raise DataError(
            f"returns must be a DataFrame with dates as index (got {type(returns).__name__}): "
            "dates are how masks and `at` are matched."
        )
    if pd.api.types.infer_dtype(returns.index, skipna=True) == "string":  # read_csv without parse_dates
        raise DataError(
            f"returns has text as its index, such as {returns.index[0]!r}, not dates. "
            "Parse them, e.g. pd.read_csv(..., index_col=0, parse_dates=True) "
            "or returns.index = pd.to_datetime(returns.index)."
        )


def _codes_and_mask(codes, mask) -> tuple[np.ndarray, np.ndarray, list]:
    """Codes as a float array without NaN rows, the mask as bool aligned to them, and the dimension names."""
    if isinstance(codes, pd.DataFrame):
        names = list(codes.columns)
        m = _date_mask(mask, codes.index) if isinstance(mask, pd.Series) else _bool_array(mask, len(codes))
        z = codes.to_numpy(dtype=np.float64)
    else:
        z = np.asarray(codes, dtype=np.float64)
        if z.ndim != 2:
            raise DataError(f"codes must be 2-D (n, latent_dim); got shape {z.shape}.")
        names = [f"factor_{i}" for i in range(z.shape[1])]
        m = _bool_array(mask, len(z))
    keep = ~np.isnan(z).any(axis=1)
    z, m = z[keep], m[keep]
    if m.all() or not m.any():
        raise DataError(
            f"the mask is {'True' if m.any() else 'False'} on all {len(m)} rows with a code: a concept "
            "vector compares the rows where it holds with those where it does not. Pass a mask with both."
        )
    return z, m, names


def _bool_array(mask, n: int) -> np.ndarray:
    m = np.asarray(mask)
    if m.dtype != bool:
        raise DataError(f"mask must be boolean; got dtype {m.dtype}. Build it with a comparison, e.g. "
                        "returns.index >= '2008-09'.")
    if m.shape != (n,):
        raise DataError(f"mask has shape {m.shape}; expected ({n},), one value per row.")
    return m


def _date_mask(mask, index: pd.Index) -> np.ndarray:
    """A bool mask aligned to ``index``: a Series must carry exactly its labels; an array its length."""
    if isinstance(mask, pd.Series):
        if not mask.index.equals(index):
            missing = index.difference(mask.index)
            raise DataError(
                f"mask is not aligned to the returns' dates ({len(missing)} date(s) of returns missing from "
                f"the mask, {len(mask.index.difference(index))} extra). Build it on returns.index, or pass "
                "mask.reindex(returns.index, fill_value=False)."
            )
        return _bool_array(mask.to_numpy(), len(index))
    return _bool_array(mask, len(index))


def _difference(z: np.ndarray, m: np.ndarray) -> np.ndarray:
    return z[m].mean(axis=0) - z[~m].mean(axis=0)


def _as_vector(vector, latent_dim: int) -> np.ndarray:
    v = np.asarray(getattr(vector, "vector", vector), dtype=np.float64)  # a ConceptVector or its numbers
    if v.shape != (latent_dim,):
        raise DataError(f"vector has shape {v.shape}; this model's codes have {latent_dim} values: "
                        f"pass shape ({latent_dim},), e.g. concept_vector(...).vector.")
    if not np.isfinite(v).all():
        raise DataError(f"vector holds NaN or infinite values ({v.tolist()}); pass finite numbers.")
    return v


def _check_strengths(strengths) -> list[float]:
    """The strengths as a list of finite floats, or a DataError that says what to pass."""
    try:
        values = np.asarray(strengths, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"strengths must be numbers, e.g. (0, 1, 2, 3); got {strengths!r}.") from None
    if values.ndim > 1 or values.size == 0:
        raise DataError(f"strengths must be a non-empty sequence of numbers, e.g. (0, 1, 2, 3); got {strengths!r}.")
    if not np.isfinite(values).all():
        raise DataError(f"strengths must be finite numbers; got {np.atleast_1d(values).tolist()}.")
    return [float(s) for s in np.atleast_1d(values)]


def _per_asset(values, assets: pd.Index, name: str) -> np.ndarray:
    """One finite float per asset, from a Series (matched by name) or an array (in column order)."""
    if isinstance(values, pd.Series):
        if set(values.index) != set(assets):
            raise DataError(f"{name} must have one entry per asset of returns; "
                            f"missing {list(assets.difference(values.index))[:5]}, "
                            f"extra {list(values.index.difference(assets))[:5]}.")
        out = values.reindex(assets).to_numpy(dtype=np.float64)
    else:
        out = np.asarray(values, dtype=np.float64)
        if out.shape != (len(assets),):
            raise DataError(f"{name} has shape {out.shape}; expected ({len(assets)},), one per asset.")
    if not np.isfinite(out).all():
        raise DataError(f"{name} holds NaN or infinite values; pass finite numbers.")
    return out


def _weights(weights, assets: pd.Index) -> pd.Series:
    if weights is None:
        return pd.Series(1.0 / len(assets), index=assets, name="weight")
    w = _per_asset(weights, assets, "weights")
    if w.sum() == 0:
        raise DataError("weights must be finite and not sum to zero (they are normalised by their sum).")
    return pd.Series(w / w.sum(), index=assets, name="weight")


def _as_windows(real, synthetic) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as float windows (n, window, n_assets); a DataFrame is cut to the other's window length."""
    if isinstance(real, pd.DataFrame) and isinstance(synthetic, pd.DataFrame):
        raise DataError("pass at least one of real, synthetic as windows (n, window, n_assets), e.g. "
                        "model.sample(n); the other may be a DataFrame of daily returns.")
    given = {name: np.asarray(x, dtype=np.float64) for name, x in (("real", real), ("synthetic", synthetic))
             if not isinstance(x, pd.DataFrame)}
    for name, a in given.items():
        if a.ndim != 3:
            raise DataError(f"{name} must have shape (n, window, n_assets); got {a.shape}.")
    window = next(iter(given.values())).shape[1]
    real_frame = real if isinstance(real, pd.DataFrame) else None
    synthetic_frame = synthetic if isinstance(synthetic, pd.DataFrame) else None
    real = given["real"] if "real" in given else return_windows(real, window)
    synthetic = given["synthetic"] if "synthetic" in given else return_windows(synthetic, window)
    if real.shape[1:] != synthetic.shape[1:]:
        raise DataError(f"real windows have shape {real.shape[1:]} and synthetic {synthetic.shape[1:]}; "
                        "they must match (window, n_assets).")
    frames = {"real": real_frame, "synthetic": synthetic_frame}
    for name, a in (("real", real), ("synthetic", synthetic)):
        if len(a) < 2 or not np.isfinite(a).all():
            cut = ""
            if frames[name] is not None:  # windows cut from daily returns: those with a gap were dropped
                cut = (f" Of the {len(frames[name]) // window} windows of {window} days in its daily returns, "
                       f"{len(a)} have no missing value: drop the assets or dates with gaps, or fill them.")
            raise DataError(f"{name} needs at least 2 windows and no NaN or infinite values; got {len(a)} "
                            f"windows.{cut}")
    return real, synthetic


def _facts(x: np.ndarray, lags: list[int], quantiles) -> dict[tuple[str, str], float]:
    """The single-sample facts of windows (n, window, n_assets), each averaged over assets."""
    pooled = x.reshape(-1, x.shape[2])
    centred = pooled - pooled.mean(axis=0)
    m2, m4 = (centred**2).mean(axis=0), (centred**4).mean(axis=0)
    out = {("distribution", "excess kurtosis"): float(np.mean(m4 / m2**2 - 3))}
    for q in quantiles:
        out[("distribution", f"quantile {q:g}")] = float(np.mean(np.quantile(pooled, q, axis=0)))
    absolute = np.abs(x)
    for k in lags:
        a, b = absolute[:, :-k].reshape(-1, x.shape[2]), absolute[:, k:].reshape(-1, x.shape[2])
        out[("volatility clustering", f"acf |r| lag {k}")] = float(np.nanmean(_columnwise_corr(a, b)))
    corr = np.corrcoef(pooled, rowvar=False)
    out[("correlation", "mean cross-asset correlation")] = float(corr[np.triu_indices_from(corr, 1)].mean())
    return out


def _columnwise_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a - a.mean(axis=0), b - b.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))


def _correlation_distance(real: np.ndarray, synthetic: np.ndarray) -> float:
    c_real, c_syn = (np.corrcoef(x.reshape(-1, x.shape[2]), rowvar=False) for x in (real, synthetic))
    upper = np.triu_indices_from(c_real, 1)
    return float(np.sqrt(np.mean((c_real[upper] - c_syn[upper]) ** 2)))


def _window_features(x: np.ndarray) -> np.ndarray:
    """Per window: the flattened returns, each asset's volatility, each day's cross-sectional mean and dispersion."""
    return np.hstack([x.reshape(len(x), -1), x.std(axis=1), x.mean(axis=2), x.std(axis=2)])


def _two_sample(real, synthetic, classifier, cv, random_state) -> tuple[np.ndarray, int]:
    rng = np.random.default_rng(random_state)
    n = min(len(real), len(synthetic))
    if n < cv:
        raise DataError(f"the two-sample test needs at least cv={cv} windows of each; got {n}. Pass more or lower cv.")
    # Balanced classes, so that 0.5 is chance whatever the inputs' sizes.
    real = real[rng.choice(len(real), n, replace=False)]
    synthetic = synthetic[rng.choice(len(synthetic), n, replace=False)]
    features = _window_features(np.concatenate([real, synthetic]))
    labels = np.r_[np.ones(n), np.zeros(n)]
    if classifier is None:
        classifier = HistGradientBoostingClassifier(max_iter=100, max_depth=3, learning_rate=0.1,
                                                    random_state=random_state)
    folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    # A few hundred windows: OpenMP threads only fight over the cores (several times slower on a busy machine).
    with threadpool_limits(1):
        scores = cross_val_score(clone(classifier), features, labels, cv=folds, scoring="accuracy")
    return scores, n
