"""FinVAE as a risk model: covariance, value-at-risk and expected-shortfall forecasts.

**The covariance.** FinVAE sees each asset's return ``r_t`` as a surprise
``x_t = (r_t - mean_) / s_t`` in units of its volatility ``s_t`` known at the
previous close (the larger of a fast and a slow EWMA volatility, see
:meth:`finvae.FinVAE.volatility`), and its linear decoder splits each day's
surprises into a factor part ``f_t = B mu_t + b`` (``mu_t`` the posterior mean
of the day's code, ``B`` the loadings) and a residual ``e_t = x_t - f_t``. At
the close of day ``t`` the forecast covariance of the next day's surprises is
the sample second moment ``S_t`` of the last ``LOOKBACK`` (252) days' surprises,
shrunk towards the model's dynamic factor structure ``F_t``: off the diagonal,
the co-moments of the same days' factor parts (a rank ``latent_dim + 1``
matrix), on it the sample's own second moments, so that only co-movements are
shrunk, as in Ledoit and Wolf's targets. ``F_t`` moves with the market:
it is built from the codes of the last year, not from the N(0, I) prior, whose
fixed correlation is worse than a sample one. The weight on ``F_t`` is Ledoit
and Wolf's (2003) optimal shrinkage intensity towards a target, estimated on
the same days, ``min(1, pi / (n * ||F - S||^2))`` with ``pi`` the summed
sampling variance of the off-diagonal entries of ``S`` (the target treated as
fixed: ``rho = 0``); nothing in it is tuned. The covariance of returns is then
``diag(s) C diag(s)`` with ``s`` each asset's volatility forecast.

**The horizon.** Over ``h`` days, the sum of the daily covariances
``C * sum_k s_k s_k'`` with each asset's variance on day ``t + k``
``v_k = slow + max(fast - slow, 0) * lam ** (k - 1)``, ``lam = 0.5 ** (1 / fast_halflife)``:
``v_1`` is the model's own scale (``max(fast, slow)`` squared), and after a
shock the fast EWMA falls back towards the slow one at the fast half-life (5
days by default), which is what it does when the coming days' squared returns
are at the slow level. The half-life of the mean reversion is so the model's
own fast ``vol_halflife``, not a number fitted to a benchmark; with one
half-life the variance stays flat. Serial correlation is ignored.

**The regime adjustment.** A year of surprises lags a change of regime (in a
sell-off correlations rise within days). Each forecast is checked the next
day: the Mahalanobis ratio ``x_{t+1}' C_t^-1 x_{t+1} / n_assets`` is 1 on
average for a right forecast, and the covariance is multiplied by an EWMA of
the past ratios (Barra's volatility regime adjustment), at the model's slow
half-life (60 days), decaying back to 1 at that half-life over the horizon.
It averages over every direction, mostly the idiosyncratic ones, so it
calibrates the whole matrix (the likelihood) rather than the market
direction: when correlations rise, idiosyncratic surprises shrink and the
ratio falls while the market's risk rises. A portfolio's VaR and ES therefore
use its own check instead: the portfolio's forecast volatility (without the
matrix's adjustment) is multiplied by the root of an EWMA of its past squared
one-day standardized returns, at the model's fast half-life (5 days), as
quickly as the volatility scaling reacts, decaying back to 1 over the
horizon at that half-life. Each squared return enters it capped at
``REGIME_CAP`` (a 3.3-sigma day): a single jump, which the fast volatility
already takes in, is not counted twice. (Which half-life goes where was
chosen on ``benchmarks/risk_bench.py`` between the model's two: the fast one
for the matrix made the daily likelihood worse, the slow one for VaR left
exceptions clustered; docs/risk_model.md.)

**VaR and ES.** A portfolio's ``h``-day volatility forecast ``sigma_t`` comes
from the covariance above and its regime adjustment; its quantile is filtered
historical simulation: the empirical ``alpha``-quantile of the portfolio's
past standardized ``h``-day returns ``u_s = (w' (r_{s+1} + ... + r_{s+h})) / sigma_s``,
over every date ``s`` of ``X`` whose ``h`` days are over by ``t`` (an
expanding, causal window). ``VaR_t = -u_(j) sigma_t`` with ``u_(j)`` the
``j``-th smallest, ``j = ceil(alpha * m)`` of ``m`` outcomes, and ``ES_t``
minus the mean of the ``j`` smallest times ``sigma_t``, so that ``ES >= VaR``
always. Over ``h > 1`` days the volatility path is the mean-reverting one
above and the quantile that of past ``h``-day outcomes (overlapping).

**Missing values and NaN.** Missing returns enter the sample moments as zero
surprises (FinVAE's convention). A date gets NaN when it is not scored by the
model (its first ``window - 1`` dates, or fewer than ``min_coverage`` of the
assets observed), when fewer than ``MIN_DAYS`` scored days lie in its lookback,
and, for VaR and ES, while fewer than ``MIN_OUTCOMES`` standardized outcomes
are known.

**Causality.** A date's forecasts use returns up to and including that date
only; tests change the future and check the past.
"""

from __future__ import annotations

import os
from numbers import Integral, Real
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy.stats import chi2
from sklearn.utils.validation import check_is_fitted

from finvae._exceptions import DataError
from finvae._validation import check_returns, day_label
from finvae.windows import trailing_ewma

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from finvae.estimator import FinVAE

__all__ = ["LOOKBACK", "MIN_DAYS", "MIN_OUTCOMES", "covariance", "covariance_forecasts",
           "expected_shortfall", "portfolio_returns", "tail_risk", "value_at_risk"]

#: Days of surprises behind each covariance forecast: one trading year, as the baselines use.
LOOKBACK = 252

#: Largest squared standardized return that enters a portfolio's regime adjustment: the 99.9 %
#: quantile of a chi-squared with one degree of freedom (a 3.3-sigma day). A jump, which the fast
#: volatility already takes in, so moves the adjustment no more than a 3.3-sigma day would
#: (bounded influence) and is not counted twice.
REGIME_CAP = float(chi2.ppf(0.999, 1))

#: Least scored days in a date's lookback for a covariance forecast (NaN below): about a trading
#: month, so that the residual covariance of a handful of assets is not a few days' outer products.
MIN_DAYS = 20

#: Least standardized outcomes known at a date for its VaR and ES (NaN below): about a trading
#: year, so that a 1 % quantile rests on a couple of observations at the very least.
MIN_OUTCOMES = 250


# ---------------------------------------------------------------- checks


def _frame(X):
    """One asset's returns as a Series → a one-column DataFrame, as ``FinVAE.fit`` takes them."""
    return X.to_frame() if isinstance(X, pd.Series) else X


def _check_horizon(horizon) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, Integral) or horizon < 1:
        raise DataError(f"horizon must be a whole number of days >= 1; got {horizon!r}.")
    return int(horizon)


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, Real) or not 0.0 < float(alpha) < 0.5:
        raise DataError(
            f"alpha must be a tail probability strictly between 0 and 0.5 (0.01 for a 99 % VaR); got {alpha!r}."
        )
    return float(alpha)


def _check_weights(weights, model, n_assets: int) -> np.ndarray:
    """Portfolio weights as an array in the model's asset order; equal weights for None."""
    if weights is None:
        return np.full(n_assets, 1.0 / n_assets)
    names = [str(c) for c in model._asset_names()]
    if isinstance(weights, dict):  # {asset: weight}, read like a Series
        weights = pd.Series(weights)
    if isinstance(weights, pd.Series):
        given = [str(c) for c in weights.index]
        if set(given) != set(names) or len(given) != len(names):
            missing = [c for c in names if c not in set(given)]
            extra = [c for c in given if c not in set(names)]
            raise DataError(
                f"weights must have one entry per asset of the model; missing {missing[:5]}, unexpected {extra[:5]}"
                + (" (duplicate names)" if not missing and not extra else "")
                + ". Pass a Series indexed by model.asset_names_."
            )
        weights = weights.set_axis(given).reindex(names)
    try:
        values = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"weights must be numbers, one per asset; got {weights!r}.") from None
    if values.ndim == 2 and values.shape[1] == n_assets and values.shape[0] > 1:
        raise DataError(
            f"weights must hold one number per asset ({n_assets}), fixed over X's dates; got a {values.shape[0]} x "
            f"{values.shape[1]} table. Weights that change over time are not supported: call once per rebalancing "
            "period, with that period's weights (and its history before it)."
        )
    if values.ndim != 1 or len(values) != n_assets:
        raise DataError(
            f"weights must hold one number per asset ({n_assets}); got shape {values.shape}."
        )
    if not np.isfinite(values).all():
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(values))]
        raise DataError(
            f"weights must be finite; NaN or inf for {bad[:5]}. Give every asset a weight (0 to leave it out)."
        )
    if not values.any():
        raise DataError("weights are all zero: an empty portfolio has no risk to forecast. Give some asset a weight.")
    return values


def _positions(index, dates, n_days: int) -> np.ndarray:
    if dates is None:
        return np.arange(n_days)
    if np.asarray(dates).dtype == bool:  # a mask over X's rows, the pandas idiom
        mask = np.asarray(dates).ravel()
        if len(mask) != n_days:
            raise DataError(f"dates as a boolean mask must have one value per row of X ({n_days}); got {len(mask)}.")
        return np.flatnonzero(mask)
    if index is None:
        given = np.asarray(dates).ravel()
        if given.size and not np.all(np.equal(np.mod(given.astype(np.float64), 1), 0)):
            raise DataError(f"dates must be whole row positions for array input; got {given[:3].tolist()}.")
        positions = given.astype(np.intp)
        if positions.size and (positions.min() < 0 or positions.max() >= n_days):
            raise DataError(f"dates must be row positions 0 .. {n_days - 1} for array input.")
        return positions
    if isinstance(dates, str) or not np.iterable(dates):  # one date
        dates = [dates]
    wanted = dates if isinstance(dates, pd.Index) else pd.Index(list(dates))
    if isinstance(index, pd.DatetimeIndex) and pd.api.types.is_integer_dtype(wanted.dtype):
        raise DataError(f"dates {list(wanted[:3])} are row positions, which are for array input; X's index is dates: "
                        "pass dates of X (e.g. X.index[[0, -1]]) or a boolean mask.")
    if isinstance(index, pd.DatetimeIndex) and not isinstance(wanted, pd.DatetimeIndex):
        try:  # strings or datetimes, read in X's time zone when they carry none
            wanted = pd.DatetimeIndex(pd.to_datetime(wanted))
        except (TypeError, ValueError) as error:
            raise DataError(f"dates must be dates of X (its index is dates); {error}.") from None
    if isinstance(index, pd.DatetimeIndex) and index.tz is not None and wanted.tz is None:
        wanted = wanted.tz_localize(index.tz)
    positions = index.get_indexer(wanted)
    if (positions < 0).any():
        missing = list(wanted[positions < 0][:3])
        raise DataError(f"dates {missing} are not dates of X; pick forecast dates from X.index.")
    return positions


# ---------------------------------------------------------------- the model's parts


class _Parts:
    """What every forecast of one input is built from: surprises, factor parts, volatilities."""

    def __init__(self, model, X) -> None:
        values, scaled, observed, ends, index, columns = model._prepare(X)
        self.index, self.columns = index, columns
        self.n_days, self.n_assets = values.shape
        _, _, decoded = model._encode_decode(scaled, ends)
        clip = float(model.model_.clip)
        x = np.clip(scaled.astype(np.float64), -clip, clip)  # 0 where missing
        self.x = x
        self.f = np.zeros_like(x)
        self.f[ends] = decoded.numpy().astype(np.float64)
        self.scored = np.zeros(self.n_days, dtype=bool)
        self.scored[ends] = True
        self.observed = observed
        self.moved = observed & (values != 0)  # a real move: not missing, not a stale price's zero
        # The volatilities for the day after each date.
        scales = [s.astype(np.float64) for _, s in model._next_day_scales(values)]  # floored at VOL_FLOOR
        halflives = model._vol_halflives()
        if len(scales) == 1:  # one EWMA: the volatility forecast stays flat
            self.fast_var = self.slow_var = scales[0] ** 2
        else:
            fast, slow = (scales[0], scales[1]) if halflives[0] <= halflives[1] else (scales[1], scales[0])
            self.fast_var, self.slow_var = fast**2, slow**2
        # the fast half-life: of the volatility's mean reversion, and of a portfolio's regime adjustment (VaR)
        self.halflife = min(halflives)
        self.lam = 0.5 ** (1.0 / self.halflife)
        # the slow half-life: of the covariance's regime adjustment and of its decay over the horizon
        self.slow_halflife = max(halflives)
        self.slow_lam = 0.5 ** (1.0 / self.slow_halflife)
        self._regime = None

    def scale_path(self, t: int, horizon: int) -> np.ndarray:
        """Each asset's volatility forecast for days ``t + 1 .. t + horizon``: shape (horizon, n_assets)."""
        fast, slow = self.fast_var[t], self.slow_var[t]
        decay = self.lam ** np.arange(horizon)[:, None]
        return np.sqrt(slow + np.maximum(fast - slow, 0.0) * decay)

    def correlation_part(self, t: int) -> np.ndarray | None:
        """The shrunk second moment ``C_t`` of the surprises at date ``t``; None without enough days."""
        if not self.scored[t]:
            return None
        lo = max(0, t - LOOKBACK + 1)
        days = lo + np.flatnonzero(self.scored[lo : t + 1])
        if len(days) < MIN_DAYS:
            return None
        x, f = self.x[days], self.f[days]
        n = len(days)
        sample = x.T @ x / n
        # Each asset's own second moment over the days it was observed: a missing day's zero surprise
        # would shrink the variance of a late listing or of an asset with a data gap (and a
        # minimum-variance portfolio would pile into it). With fewer than MIN_DAYS observed days the
        # rest count at 1, the second moment the volatility scaling aims at. Raising the diagonal keeps
        # the matrix positive semi-definite; co-movements keep the zeros (biased towards 0).
        seen = self.observed[days].sum(axis=0)
        short = np.flatnonzero(seen < n)  # assets missing on some day (only they change: bit for bit)
        counted = np.maximum(seen[short], MIN_DAYS)
        sample[short, short] = (np.square(x[:, short]).sum(axis=0) + (counted - seen[short])) / counted
        # The target: the factor parts' co-moments off the diagonal, and the sample's own second
        # moments on it (as in Ledoit and Wolf's targets): only the co-movements are shrunk. (The
        # larger of the two on the diagonal: a factor part's own moment can exceed its asset's by a
        # little, and the target stays positive semi-definite.)
        target = f.T @ f / n
        diagonal = np.diag_indices_from(target)
        target[diagonal] = np.maximum(sample[diagonal], target[diagonal])
        # Ledoit-Wolf: pi sums the variances of the products x_i x_j over the entries off the
        # diagonal (pi / n: those of S's entries), gamma the squared distances of S to the target.
        squares = np.square(x)
        pi = squares.T @ squares / n - np.square(sample)
        pi[diagonal] = 0.0
        gamma = np.square(target - sample).sum()
        intensity = 1.0 if gamma <= 0 else float(np.clip(pi.sum() / (n * gamma), 0.0, 1.0))
        return intensity * target + (1.0 - intensity) * sample

    def regime(self) -> np.ndarray:
        """Each date's regime multiplier of the covariance: the EWMA of past one-day Mahalanobis ratios."""
        if self._regime is None:
            ratio = np.full(self.n_days, np.nan)
            # An asset enters the check once it has moved on MIN_DAYS scored days of the lookback: before a late
            # listing, or through a run of stale prices, its second moment is near 0, and its first real move
            # would read as a regime change of every asset.
            moves = np.concatenate([np.zeros((1, self.n_assets)), np.cumsum(self.moved & self.scored[:, None], 0)])
            for s in range(self.n_days - 1):
                part = self.correlation_part(s)
                if part is not None and self.scored[s + 1]:
                    seen = (moves[s + 1] - moves[max(0, s - LOOKBACK + 1)]) >= MIN_DAYS
                    if not seen.any():
                        continue
                    x = self.x[s + 1, seen]
                    try:
                        ratio[s] = float(x @ np.linalg.solve(part[np.ix_(seen, seen)], x)) / int(seen.sum())
                    except np.linalg.LinAlgError:
                        pass
            valid = np.flatnonzero(np.isfinite(ratio))
            level = trailing_ewma(ratio[valid], 1.0, self.slow_halflife)
            known = np.searchsorted(valid + 1, np.arange(self.n_days), side="right")
            self._regime = level[known]
        return self._regime

    def covariance(self, t: int, horizon: int) -> np.ndarray | None:
        part = self.correlation_part(t)
        if part is None:
            return None
        path = self.scale_path(t, horizon)
        excess = self.regime()[t] - 1.0  # decays over the horizon at the slow half-life
        path = path * np.sqrt(np.maximum(1.0 + excess * self.slow_lam ** np.arange(horizon), 0.0))[:, None]
        return part * (path.T @ path)


def _trading_rows(X) -> np.ndarray | None:
    """The rows of ``X`` on which some asset has a return; None when that is every row (or none: checked later).

    A row with no return at all is a holiday of a merged calendar, not a trading day: the forecasts leave it
    out (as the VaR does), rather than count it as a day of zero surprises."""
    if np.ndim(X) != 2 or (isinstance(X, pd.DataFrame) and X.index.has_duplicates):  # duplicates: refused later
        return None
    empty = np.asarray(pd.isna(X)).all(axis=1)
    return None if not empty.any() or empty.all() else np.flatnonzero(~empty)


def _forecast_arrays(model, X, positions: np.ndarray, horizon: int) -> tuple[np.ndarray, _Parts]:
    """Covariance forecasts at row ``positions`` of ``X``; NaN at rows without any return."""
    rows = _trading_rows(X)
    if rows is not None:
        kept = X.iloc[rows] if isinstance(X, pd.DataFrame) else np.asarray(X)[rows]
        at = np.minimum(np.searchsorted(rows, positions), len(rows) - 1)
        trading = rows[at] == positions
        arrays, parts = _forecast_arrays(model, kept, at[trading], horizon)
        out = np.full((len(positions),) + arrays.shape[1:], np.nan)
        out[trading] = arrays
        return out, parts
    parts = _Parts(model, X)
    out = np.full((len(positions), parts.n_assets, parts.n_assets), np.nan)
    for i, t in enumerate(positions):
        cov = parts.covariance(int(t), horizon)
        if cov is not None:
            out[i] = cov
    return out, parts


# ---------------------------------------------------------------- public functions


def covariance_forecasts(model: FinVAE, X: pd.DataFrame | np.ndarray, *, horizon: int = 1,
                         dates: ArrayLike | None = None) -> pd.DataFrame | np.ndarray:
    """Forecast covariance of the next ``horizon`` days' returns at the close of each date of ``X``.

    The method is in this module's docstring: the last year's volatility-scaled
    surprises, shrunk towards FinVAE's dynamic factor structure, read in each
    asset's volatility forecast, which mean-reverts over the horizon.

    Parameters
    ----------
    model : FinVAE
        A fitted model.
    X : DataFrame of shape (n_days, n_assets) or array-like
        Daily returns with the model's assets, in date order. Each date's
        forecast uses the rows up to and including it only.
    horizon : int, default=1
        Days ahead: the forecast is the covariance of the sum of the next
        ``horizon`` days' returns.
    dates : sequence of dates (row positions for array input), optional
        Forecast dates; default every date of ``X``.

    Returns
    -------
    covariances : DataFrame with a (date, asset) MultiIndex and the assets as columns
        (the layout of ``returns.rolling(n).cov()``, its levels named after
        ``X``'s index and columns, "date" and "asset" when they have no
        name), or ndarray of shape
        (n_dates, n_assets, n_assets) for array input. NaN for dates without
        a forecast (module docstring).

    Examples
    --------
    >>> from finvae import FinVAE
    >>> from finvae.datasets import load_sp500_sample, prices_to_returns
    >>> from finvae.risk import covariance_forecasts
    >>> returns = prices_to_returns(load_sp500_sample())
    >>> model = FinVAE(random_state=0, verbose=0).fit(returns.loc[:"2012"])
    >>> covs = covariance_forecasts(model, returns.loc[:"2022"], horizon=21)
    >>> covs.loc["2020-03-16"].shape             # assets x assets, for the next 21 days
    (20, 20)
    """
    horizon = _check_horizon(horizon)
    X = _frame(X)
    parts_index = getattr(X, "index", None) if isinstance(X, pd.DataFrame) else None
    n_days = len(X)
    positions = _positions(parts_index, dates, n_days)
    _check_memory(len(positions), X.shape[1], copies=1 if parts_index is None else 2)
    arrays, parts = _forecast_arrays(model, X, positions, horizon)
    if parts.index is None:
        return arrays
    assets = parts.columns
    dates_of_x = X.index[positions]  # X's own rows: a holiday row asked for gets NaN
    rows = pd.MultiIndex.from_product([dates_of_x, assets], names=[dates_of_x.name or "date", assets.name or "asset"])
    return pd.DataFrame(arrays.reshape(-1, parts.n_assets), index=rows, columns=assets)


def _check_memory(n_dates: int, n_assets: int, copies: int) -> None:
    """DataError when ``n_dates`` covariance matrices (``copies`` of them: a DataFrame copies the array) exceed
    this machine's memory, before any is computed: a MemoryError (or the system killing the process) after
    minutes of work would say less."""
    needed = copies * n_dates * n_assets**2 * 8
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): no check
        return
    if needed > memory:
        raise DataError(
            f"covariance forecasts for {n_dates:,} dates of {n_assets:,} assets need about {needed / 2**30:.1f} GiB "
            f"(one {n_assets:,} x {n_assets:,} matrix per date{', twice for the DataFrame' if copies == 2 else ''}), "
            f"more than this machine's {memory / 2**30:.1f} GiB. Pass dates= (e.g. month ends: "
            "returns.index[returns.index.is_month_end]), or covariance() for the last date.")


def covariance(model: FinVAE, X: pd.DataFrame | np.ndarray, *, horizon: int = 1) -> pd.DataFrame | np.ndarray:
    """Forecast covariance of the next ``horizon`` days' returns at the close of ``X``'s last date.

    :func:`covariance_forecasts` for the last date alone: a DataFrame assets ×
    assets (ndarray for array input), all NaN when that date has no forecast.

    Examples
    --------
    >>> from finvae.risk import covariance
    >>> cov = covariance(model, returns.loc[:"2020-03-16"], horizon=5)    # doctest: +SKIP
    >>> cov.shape                                                         # doctest: +SKIP
    (20, 20)
    """
    horizon = _check_horizon(horizon)
    X = _frame(X)
    arrays, parts = _forecast_arrays(model, X, np.array([len(X) - 1]), horizon)
    last = X.iloc[-1] if isinstance(X, pd.DataFrame) else np.asarray(X)[-1]  # X is checked by now
    if np.isnan(np.asarray(last, dtype=np.float64)).all():
        when = day_label(X.index[-1]) if isinstance(X, pd.DataFrame) else f"row {len(X) - 1}"
        raise DataError(f"X's last date, {when}, has no return for any asset (a holiday?): a forecast is made at a "
                        "trading day's close. Drop such rows, e.g. X.dropna(how='all').")
    if parts.index is None:
        return arrays[0]
    return pd.DataFrame(arrays[0], index=parts.columns, columns=parts.columns)


def _portfolio_tail(model, X, alpha, weights, horizon) -> tuple[np.ndarray, np.ndarray, pd.Index | None]:
    """VaR and ES (positive losses) of each date, by filtered historical simulation."""
    check_is_fitted(model)
    X = _frame(X)
    alpha, horizon = _check_alpha(alpha), _check_horizon(horizon)
    w = _check_weights(weights, model, int(model.n_features_in_))
    values = X.to_numpy(dtype=np.float64) if isinstance(X, pd.DataFrame) else np.asarray(X, dtype=np.float64)
    if values.ndim == 2 and horizon >= len(values):
        raise DataError(f"horizon={horizon} days is not shorter than X ({len(values)} days): no {horizon}-day "
                        "outcome can be seen to calibrate the VaR. Pass a shorter horizon or a longer history.")
    rows = _trading_rows(X)
    if rows is not None:
        # A holiday row is left out: it neither counts as a zero outcome nor separates a forecast from the
        # next day's outcome.
        kept = X.iloc[rows] if isinstance(X, pd.DataFrame) else values[rows]
        var_kept, es_kept, _ = _portfolio_tail(model, kept, alpha, weights, horizon)
        var, es = np.full(len(values), np.nan), np.full(len(values), np.nan)
        var[rows], es[rows] = var_kept, es_kept
        return var, es, X.index if isinstance(X, pd.DataFrame) else None
    parts = _Parts(model, X)
    n = parts.n_days
    daily_var = np.full((n, horizon), np.nan)  # the portfolio's variance on each day of the horizon
    for t in range(n):
        part = parts.correlation_part(t)
        if part is not None:
            path = parts.scale_path(t, horizon) * w  # (horizon, n_assets)
            daily_var[t] = np.maximum(np.einsum("ki,ij,kj->k", path, part, path), 0.0)
    daily = np.nansum(values * w, axis=1)  # missing returns count as 0
    gap = _data_gaps(values[:, w != 0])
    # the portfolio's regime adjustment, decaying back to 1 over the horizon as the fast volatility does
    excess = _regime_adjustment(np.where(gap, np.nan, daily), np.sqrt(daily_var[:, 0]), parts.halflife) - 1.0
    decay = parts.lam ** np.arange(horizon)
    sigma = np.sqrt((daily_var * np.maximum(1.0 + excess[:, None] * decay, 0.0)).sum(axis=1))
    # The realised h-day return after each date s: days s+1 .. s+h.
    sums = np.concatenate(([0.0], np.cumsum(daily)))
    outcome = np.full(n, np.nan)
    last = n - horizon  # dates whose h days are inside X
    if last > 0:
        outcome[:last] = sums[1 + horizon : n + 1] - sums[1 : last + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        standardized = outcome / sigma
    valid = np.flatnonzero(np.isfinite(standardized) & (sigma > 0))
    # known[t]: how many of the valid outcomes are over by date t (s + horizon <= t).
    known = np.searchsorted(valid + horizon, np.arange(n), side="right")
    u = standardized[valid]
    var = np.full(n, np.nan)
    es = np.full(n, np.nan)
    for t in range(n):
        m = int(known[t])
        if m < MIN_OUTCOMES or not np.isfinite(sigma[t]):
            continue
        j = max(1, int(np.ceil(alpha * m)))
        tail = np.partition(u[:m], j - 1)[:j]
        var[t] = -tail.max() * sigma[t]
        es[t] = -tail.mean() * sigma[t]
    return var, es, parts.index


def _data_gaps(held: np.ndarray) -> np.ndarray:
    """Days on which a held asset that has started trading has no return, for up to ``MIN_DAYS`` days in a row.

    A portfolio's regime adjustment skips them: a gap's zero returns would read as calm, and the VaR would shrink
    with every day of the gap. A longer absence is a delisting: the asset's weight is then cash, and the days count
    again. Causal: a day's answer reads no later day.
    """
    missing = np.isnan(held) & np.maximum.accumulate(~np.isnan(held), axis=0)
    run = np.zeros(held.shape[1], dtype=np.intp)
    gap = np.zeros(len(held), dtype=bool)
    for t in range(len(held)):  # days in a row each asset has been missing
        run = (run + 1) * missing[t]
        gap[t] = ((run > 0) & (run <= MIN_DAYS)).any()
    return gap


def _regime_adjustment(daily: np.ndarray, sigma_1: np.ndarray, halflife: float) -> np.ndarray:
    """Each date's variance multiplier: an EWMA of the past squared one-day standardized returns."""
    n = len(daily)
    with np.errstate(invalid="ignore", divide="ignore"):
        squared = np.square(daily[1:] / sigma_1[:-1])  # the outcome of date s's forecast, known at s + 1
    valid = np.flatnonzero(np.isfinite(squared))
    level = trailing_ewma(np.minimum(squared[valid], REGIME_CAP), 1.0, halflife)
    # date t knows the outcomes of the forecasts made at s <= t - 1
    known = np.searchsorted(valid + 1, np.arange(n), side="right")
    return level[known]


def tail_risk(model: FinVAE, X: pd.DataFrame | np.ndarray, alpha: float = 0.01,
              weights: pd.Series | ArrayLike | None = None, horizon: int = 1) -> pd.DataFrame | np.ndarray:
    """:func:`value_at_risk` and :func:`expected_shortfall` in one pass, as two columns of a DataFrame.

    Returns
    -------
    risk : DataFrame aligned to ``X``'s dates (ndarray of shape (n_days, 2) for array input)
        Columns ``value_at_risk`` and ``expected_shortfall``.

    Examples
    --------
    >>> from finvae.risk import tail_risk
    >>> risk = tail_risk(model, returns, alpha=0.025)         # doctest: +SKIP
    >>> list(risk.columns)                                    # doctest: +SKIP
    ['value_at_risk', 'expected_shortfall']
    """
    var, es, index = _portfolio_tail(model, X, alpha, weights, horizon)
    if index is None:
        return np.column_stack([var, es])
    return pd.DataFrame({"value_at_risk": var, "expected_shortfall": es}, index=index)


def value_at_risk(model: FinVAE, X: pd.DataFrame | np.ndarray, alpha: float = 0.01,
                  weights: pd.Series | ArrayLike | None = None, horizon: int = 1) -> pd.Series | np.ndarray:
    """Value-at-risk of a portfolio at the close of each date: the loss exceeded with probability ``alpha``.

    Filtered historical simulation on FinVAE's covariance forecast (module
    docstring): the portfolio's forecast volatility over the next ``horizon``
    days times the empirical quantile of its past standardized returns.

    Parameters
    ----------
    model : FinVAE
        A fitted model.
    X : DataFrame of shape (n_days, n_assets) or array-like
        Daily returns with the model's assets, in date order; the VaR of a date
        uses the rows up to it only. Pass a long history: the first
        ``MIN_OUTCOMES`` (250) usable dates only collect outcomes and get NaN.
    alpha : float, default=0.01
        Tail probability, in (0, 0.5): 0.01 for a 99 % VaR.
    weights : Series indexed by asset, or array-like of shape (n_assets,), optional
        Portfolio weights (any signs and sum); default equal weights.
    horizon : int, default=1
        Days over which the loss is measured.

    Returns
    -------
    var : Series named "value_at_risk" aligned to ``X``'s dates (ndarray for array input)
        A positive number is a loss, in return units (log returns for log
        returns). NaN where no forecast can be made (module docstring).

    Raises
    ------
    DataError
        Weights of the wrong length or asset names, or not finite; ``alpha``
        outside (0, 0.5); ``horizon`` not a whole number >= 1; ``X`` unusable.

    Examples
    --------
    >>> from finvae import FinVAE
    >>> from finvae.datasets import load_sp500_sample, prices_to_returns
    >>> from finvae.risk import portfolio_returns
    >>> returns = prices_to_returns(load_sp500_sample())
    >>> model = FinVAE(random_state=0, verbose=0).fit(returns.loc[:"2012"])
    >>> var = model.value_at_risk(returns, alpha=0.01)       # 99 % one-day VaR, equal weights
    >>> pnl = portfolio_returns(model, returns)               # the portfolio it is for, trading days only
    >>> exceptions = -pnl.shift(-1) > var.loc[pnl.index]      # the next trading day lost more
    """
    var, _, index = _portfolio_tail(model, X, alpha, weights, horizon)
    return var if index is None else pd.Series(var, index=index, name="value_at_risk")


def portfolio_returns(model: FinVAE, X: pd.DataFrame | np.ndarray,
                      weights: pd.Series | ArrayLike | None = None) -> pd.Series | np.ndarray:
    """The daily return of the portfolio whose VaR and ES this module forecasts, on trading days only.

    ``sum_i w_i r_i`` with the weights as :func:`value_at_risk` reads them (equal
    weights ``1 / n_assets`` by default) and a missing return counted as 0, as
    the forecasts count it (``returns.mean(axis=1)`` would instead re-weight over
    the assets present, another portfolio). Dates on which no asset has a return
    (holidays of a merged calendar) are left out, as the forecasts leave them
    out, so that ``pnl.shift(-1)`` is the next *trading* day's return: the
    outcome of the one-day VaR made at a date's close.

    Returns
    -------
    pnl : Series named "portfolio" on ``X``'s trading days (ndarray for array input)

    Examples
    --------
    >>> pnl = portfolio_returns(model, returns, weights)                 # doctest: +SKIP
    >>> var = model.value_at_risk(returns, weights=weights).loc[pnl.index]  # doctest: +SKIP
    >>> plot_var_backtest(pnl, var.shift(1))   # each day's return against the VaR made the day before  # doctest: +SKIP
    """
    check_is_fitted(model)
    X = _frame(X)
    w = _check_weights(weights, model, int(model.n_features_in_))
    values, _, columns = check_returns(X, window=1, fitting=False)
    model._check_columns(columns, values.shape[1])  # the model's assets, in its order, as the VaR reads them
    trading = ~np.isnan(values).all(axis=1)
    pnl = np.nansum(values[trading] * w, axis=1)
    return pnl if not isinstance(X, pd.DataFrame) else pd.Series(pnl, index=X.index[trading], name="portfolio")


def expected_shortfall(model: FinVAE, X: pd.DataFrame | np.ndarray, alpha: float = 0.01,
                       weights: pd.Series | ArrayLike | None = None, horizon: int = 1) -> pd.Series | np.ndarray:
    """Expected shortfall of a portfolio at the close of each date: the mean loss beyond the VaR.

    Same model, inputs and errors as :func:`value_at_risk`; at least as large
    as the VaR of the same date.

    Returns
    -------
    es : Series named "expected_shortfall" aligned to ``X``'s dates (ndarray for array input)

    Examples
    --------
    >>> es = model.expected_shortfall(returns, alpha=0.025)   # doctest: +SKIP
    """
    _, es, index = _portfolio_tail(model, X, alpha, weights, horizon)
    return es if index is None else pd.Series(es, index=index, name="expected_shortfall")
