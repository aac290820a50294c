"""Synthetic returns with volatility dynamics: FinVAE's codes and surprises driven through its own volatility.

A fitted :class:`~finvae.FinVAE` reads each day's returns as surprises
``x_t = (r_t - mean_) / sigma_t``, with ``sigma_t`` each asset's trailing
volatility known at the previous close (the larger of a fast and a slow EWMA,
``vol_halflife``), and explains a day's surprises with a code ``z_t`` through
a linear decoder, ``x_t = B z_t + b + e_t``. The generative model here keeps
those three pieces and adds the dynamics that the VAE's N(0, I) prior lacks:

1. **Codes** follow a VAR(1) fitted by least squares on the posterior means
   of consecutive days, ``z_t = c + A z_{t-1} + u_t``. The innovation ``u_t``
   is not Gaussian: it is a real day's innovation, drawn from the history.
2. **Residuals** ``e_t`` (the part of a day's surprises the code does not
   explain) are drawn *jointly* with the innovation, from the same real day:
   a day's factor shock, its cross-section of idiosyncratic moves and their
   tails travel together, so sell-off days keep their high correlation and
   their fat tails.
3. **Which real days**: a stationary bootstrap (Politis & Romano 1994). Each
   simulated day takes the real day after the one drawn the day before, or,
   with probability ``1 / window``, a random real day: blocks of ``window``
   days on average, the span the model's codes see. Runs of real surprises
   keep what the trailing volatility misses: after an isolated jump, the real
   surprises that follow are small (the EWMA over-reacts to a jump), and
   falls are followed by larger moves than rises are (the leverage effect).
   Drawing days one by one instead gave almost no leverage effect (-0.006 and
   -0.010 against -0.028 real, corr(r_t, r_{t+k}**2) at lags 1-10) and was
   further from the real series on all eleven Quant GANs distances of
   ``benchmarks/stylized_facts_bench.py`` with two seeds.
4. **Volatility** is driven forward by the same EWMA recursion the model
   scales with, fed the simulated returns: ``v <- lam v + (1 - lam) (r - mean_)**2``
   per half-life, ``sigma = max(sqrt(v_fast), sqrt(v_slow), floor)``. A large
   simulated shock raises the next days' volatility (clustering). A pure EWMA
   is a random walk in the variance (an IGARCH) that drifts off over long
   horizons, so every leg is also pulled toward the training variance
   ``scale_**2`` at the rate of the slowest one:
   ``v <- v + (1 - lam_slow) (scale_**2 - v)``, which makes the slow leg a
   GARCH(1,1) with persistence ``lam_slow`` (half-life 60 days by default, in
   line with GARCH fits on daily equity returns). No half-life is tuned here:
   they are the model's ``vol_halflife``.

Returns are then ``r_t = mean_ + sigma_t * x_t``. A path starts from a state:
the code and the EWMA variances after a real date. :func:`simulate` starts
every path from the last date of the returns given (conditional: a calm date
gives calm paths, a stormy one stormy paths); :func:`sample` starts each
window from a random date of the history (so the spread of volatility levels
across windows is the history's).

The dynamics (:class:`Dynamics`) are learned from a returns history by
:func:`fit_dynamics`, using data up to its last date only.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from finvae._exceptions import DataError
from finvae._validation import check_returns

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from finvae.estimator import FinVAE

__all__ = ["Dynamics", "fit_dynamics", "sample", "sample_static", "simulate", "simulate_from_states", "starting_states",
           "state_at"]

#: The arrays of a :class:`Dynamics`, as saved with a model (``FinVAE.save``): name → dtype.
_ARRAYS = {"intercept": np.float64, "transition": np.float64, "innovations": np.float64, "residuals": np.float32,
           "codes": np.float64, "variances": np.float32, "follows": np.bool_}


@dataclass(frozen=True, repr=False, eq=False)
class Dynamics:
    """The dynamic prior of a fitted FinVAE: a VAR(1) on its codes and a pool of real days to draw from.

    Attributes
    ----------
    intercept : ndarray of shape (latent_dim,)
        ``c`` of ``z_t = c + A z_{t-1} + u_t``.
    transition : ndarray of shape (latent_dim, latent_dim)
        ``A`` (its spectral radius is kept below 0.99, so that the codes are stationary).
    innovations : ndarray of shape (n_days, latent_dim)
        The real days' ``u_t``, drawn jointly with ``residuals``.
    residuals : ndarray of shape (n_days, n_assets), float32
        The real days' ``x_t - B mu_t - b`` (0 where a return is missing), shifted by one constant per
        asset so that the average simulated surprise is 0 (the drift is ``mean_``).
    codes : ndarray of shape (n_states, latent_dim)
        Posterior mean of each date with a code: the states :func:`sample` starts from.
    variances : ndarray of shape (n_legs, n_states, n_assets), float32
        Each EWMA leg's variance after each of those dates.
    dates : Index
        Those dates (positions for array input).
    follows : ndarray of bool, shape (n_days,)
        Whether pool day ``j + 1`` is the real day after pool day ``j`` (a block may go on).

    Examples
    --------
    A fitted FinVAE holds the dynamics learned on its training returns, ``model.dynamics_``;
    :func:`fit_dynamics` learns them from another history.

    >>> from finvae.simulation import fit_dynamics
    >>> dynamics = fit_dynamics(model, returns.loc[:"2019"])      # doctest: +SKIP
    >>> dynamics.transition.shape                                 # doctest: +SKIP
    (3, 3)
    """

    intercept: np.ndarray
    transition: np.ndarray
    innovations: np.ndarray
    residuals: np.ndarray
    codes: np.ndarray
    variances: np.ndarray
    dates: pd.Index
    follows: np.ndarray

    def __repr__(self) -> str:
        radius = float(np.abs(np.linalg.eigvals(self.transition)).max()) if self.transition.size else 0.0
        return (f"Dynamics(latent_dim={len(self.intercept)}, pool of {len(self.innovations)} days, "
                f"{len(self.codes)} start states, VAR(1) spectral radius {radius:.3f})")


def dynamics_arrays(dynamics: Dynamics) -> tuple[dict[str, np.ndarray], list]:
    """The arrays of ``dynamics`` (booleans as uint8) and its dates as JSON values, for saving without pickle."""
    arrays = {name: np.ascontiguousarray(getattr(dynamics, name), dtype=np.uint8 if dtype is np.bool_ else dtype)
              for name, dtype in _ARRAYS.items()}
    return arrays, dates_to_json(dynamics.dates)


def dynamics_from_arrays(arrays: dict[str, np.ndarray], dates: list | dict, latent_dim: int | None = None,
                         n_assets: int | None = None) -> Dynamics:
    """The inverse of :func:`dynamics_arrays`; a ValueError naming the array whose shape or values do not fit.

    ``latent_dim`` and ``n_assets``, when given, are the model's: the arrays must have its sizes.
    """
    index = dates_from_json(dates)
    found = {name: np.asarray(arrays[name]).astype(dtype) for name, dtype in _ARRAYS.items()}
    k = latent_dim if latent_dim is not None else len(found["intercept"])
    n_pool, n_states = len(found["innovations"]), len(found["codes"])
    n_assets = n_assets if n_assets is not None else found["residuals"].shape[-1]
    expected = {"intercept": (k,), "transition": (k, k), "innovations": (n_pool, k), "residuals": (n_pool, n_assets),
                "codes": (n_states, k), "variances": (found["variances"].shape[0], n_states, n_assets),
                "follows": (n_pool,)}
    for name, shape in expected.items():
        if found[name].shape != shape:
            raise ValueError(f"dynamics.{name} has shape {found[name].shape}, but the model needs {shape}")
        if found[name].dtype.kind == "f" and not np.isfinite(found[name]).all():
            raise ValueError(f"dynamics.{name} holds NaN or infinite values")
    if len(index) != n_states:
        raise ValueError(f"{len(index)} dynamics dates for {n_states} start states")
    return Dynamics(**found, dates=index)


def dates_to_json(dates: pd.Index) -> list | dict:
    """An index of dates as JSON: ISO strings; tz-aware ones in UTC with the zone's name (a zone with summer
    time has two offsets, which one parse cannot mix); any other index (positions, string labels) as its labels."""
    if isinstance(dates, pd.DatetimeIndex):
        if dates.tz is None:
            return [d.isoformat() for d in dates]
        return {"utc": [d.isoformat() for d in dates.tz_convert("UTC").tz_localize(None)], "tz": str(dates.tz)}
    return {"labels": [d.item() if isinstance(d, np.generic) else d for d in dates]}


def dates_from_json(dates: list | dict) -> pd.Index:
    """The inverse of :func:`dates_to_json` (a list of integers: positions, as saved before labels were kept)."""
    if isinstance(dates, dict) and "utc" in dates:
        index = pd.DatetimeIndex(dates["utc"]).tz_localize("UTC")
        try:
            return index.tz_convert(dates["tz"])
        except (TypeError, ValueError, KeyError):  # a zone this machine does not know: the same instants, in UTC
            return index
    if isinstance(dates, dict):
        return pd.Index(dates["labels"])
    return pd.DatetimeIndex(dates) if dates and isinstance(dates[0], str) else pd.Index(dates, dtype=np.int64)


# ----------------------------------------------------------------------------- states and fitting


def _states(model, returns):
    """Codes, residuals and EWMA variances of every date with a code, from one causal pass over ``returns``."""
    check_is_fitted(model)
    values, index, columns = check_returns(returns, window=model.window, fitting=False)
    model._check_columns(columns, values.shape[1])
    scaled, observed = model._scale(values)
    return _states_of(model, values, scaled, observed, index)


def _states_of(model, values, scaled, observed, index):
    """:func:`_states` on arrays already checked and scaled (``FinVAE.fit`` has them at hand)."""
    ends = model._scored_ends(observed)
    if len(ends) == 0:
        raise DataError(
            f"returns have no date with a full window of {model.window} days and at least "
            f"{model.min_coverage:.0%} of assets observed: too short a history to start from. "
            f"Pass at least {model.window} rows."
        )
    mu, _, decoded = model._encode_decode(scaled, ends)
    residuals = decoded.numpy()  # the decoded means' array becomes the residuals': one array, not three
    np.subtract(scaled[ends], residuals, out=residuals)
    residuals[~observed[ends]] = np.nan  # no residual where no return: the pool fills these (_dynamics)
    dates = index[ends] if index is not None else pd.RangeIndex(len(values))[ends]
    return ends, mu.numpy().astype(np.float64), residuals, _variances_after(model, values, ends), dates, len(values)


def _variances_after(model, values, ends) -> np.ndarray:
    """Each EWMA leg's variance after each day of ``ends``: float32, shape (n_legs, len(ends), n_assets).

    The legs of ``FinVAE._next_day_scales``, one at a time to hold one leg in memory.
    """
    variances = np.empty((len(model._vol_halflives()), len(ends), values.shape[1]), dtype=np.float32)
    for i, (_, leg) in enumerate(model._next_day_scales(values)):
        np.square(leg[ends], out=variances[i])
    return variances


def fit_dynamics(model: FinVAE, returns: pd.DataFrame | np.ndarray) -> Dynamics:
    """Learn the dynamic prior of a fitted FinVAE from a returns history (up to its last date only).

    Parameters
    ----------
    model : FinVAE
        Fitted.
    returns : DataFrame of shape (n_days, n_assets) or array-like
        Daily returns with the model's assets, typically its training data.

    Returns
    -------
    Dynamics

    Examples
    --------
    >>> from finvae.simulation import fit_dynamics
    >>> dynamics = fit_dynamics(model, returns.loc[:"2019"])      # doctest: +SKIP
    """
    return _dynamics(model, *_states(model, returns)[:5])


def training_dynamics(model, values, scaled, observed, index) -> Dynamics | None:
    """The dynamics that ``FinVAE.fit`` learns from its checked and scaled training arrays.

    None when they hold too few consecutive scored days to learn the codes' VAR(1).
    """
    try:
        return _dynamics(model, *_states_of(model, values, scaled, observed, index)[:5])
    except DataError:
        return None


def _dynamics(model, ends, mu, residuals, variances, dates) -> Dynamics:
    """:func:`fit_dynamics` from the states of a history (:func:`_states`)."""
    pairs = np.flatnonzero(np.diff(ends) == 1)  # consecutive dates: ends[i] and ends[i + 1]
    k = mu.shape[1]
    if len(pairs) < k + 2:
        raise DataError(
            f"returns give {len(pairs)} pair(s) of consecutive dates with a code; learning the codes' dynamics "
            f"needs at least {k + 2}. Pass a longer history (at least {model.window + k + 2} rows)."
        )
    before, after = mu[pairs], mu[pairs + 1]
    design = np.hstack([np.ones((len(pairs), 1)), before])
    coef, *_ = np.linalg.lstsq(design, after, rcond=None)
    intercept, transition = coef[0], coef[1:].T
    radius = np.abs(np.linalg.eigvals(transition)).max()
    if radius > 0.99:  # a unit root would let the codes wander off: shrink to a stationary VAR
        transition = transition * (0.99 / radius)
        intercept = (after - before @ transition.T).mean(axis=0)
    innovations = after - intercept - before @ transition.T
    # Centre the surprises: the pool's average day, decoded from the codes' long-run mean, is moved to 0, so
    # that the drift of simulated returns is the training mean mean_ whatever the volatility (real surprises
    # average slightly above 0, as calm days rise more often; read in a stormy day's volatility that would
    # become a drift of several percent a month).
    loadings = model.model_.decoder.loadings
    B, b = loadings.weight.detach().numpy().astype(np.float64), loadings.bias.detach().numpy().astype(np.float64)
    long_run_code = np.linalg.solve(np.eye(k) - transition, intercept)
    pool = residuals[pairs + 1]
    # A day on which an asset has no return (before its listing, in a gap) has no residual of its own: it takes
    # one of that asset's observed days', drawn once and fixed (the same history gives the same dynamics).
    # Zeros there would give a late listing almost no moves of its own in simulated paths.
    missing = np.isnan(pool)
    fill = np.random.default_rng(0)
    for asset in np.flatnonzero(missing.any(axis=0)):
        seen = np.flatnonzero(~missing[:, asset])
        gaps = missing[:, asset]
        pool[gaps, asset] = pool[fill.choice(seen, gaps.sum()), asset] if len(seen) else 0.0
    offset = (B @ long_run_code + b + pool.mean(axis=0, dtype=np.float64)).astype(np.float32)
    pool -= offset
    dated = ends[pairs + 1]
    follows = np.r_[np.diff(dated) == 1, False]  # pool day j + 1 is the real day after pool day j
    return Dynamics(
        intercept=intercept, transition=transition, innovations=innovations,
        residuals=pool, codes=mu, variances=variances, dates=dates, follows=follows,
    )


def state_at(model: FinVAE, returns: pd.DataFrame | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The state after the last date of ``returns``: its code and each EWMA leg's variance.

    Returns
    -------
    code : ndarray of shape (latent_dim,)
    variances : ndarray of shape (n_legs, n_assets)

    Examples
    --------
    >>> from finvae.simulation import state_at
    >>> code, variances = state_at(model, returns.loc[:"2020-03-16"])    # doctest: +SKIP
    >>> code.shape, variances.shape              # two EWMA legs (vol_halflife=(5, 60))  # doctest: +SKIP
    ((3,), (2, 20))
    """
    return _last_state(model, _states(model, returns))


def _last_state(model, states) -> tuple[np.ndarray, np.ndarray]:
    """:func:`state_at` from the states of a history (:func:`_states`)."""
    ends, mu, _, variances, _, n_days = states
    if ends[-1] != n_days - 1:
        raise DataError(
            f"the last date of returns has no code: fewer than {model.min_coverage:.0%} of the assets are observed "
            "on it (or its window is not full). Drop that row, or end returns on a date with enough returns."
        )
    return mu[-1], variances[:, -1]


# ----------------------------------------------------------------------------- simulation


def _generator(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**32 - 1))
    if random_state is None or isinstance(random_state, Integral):
        return np.random.default_rng(random_state)
    raise DataError(f"random_state must be None, an int or a numpy RandomState/Generator; got {random_state!r}.")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise DataError(f"{name} must be a whole number of at least 1; got {value!r}.")
    return int(value)


def _check_dynamics(model, dynamics) -> None:
    """A DataError unless ``dynamics`` is a :class:`Dynamics` of this model's sizes (another model's would not fit)."""
    if not isinstance(dynamics, Dynamics):
        raise DataError(
            f"dynamics must be a finvae.simulation.Dynamics (fit_dynamics(model, returns), or None for the model's "
            f"own); got {dynamics!r}. Only FinVAE.sample has a static prior (dynamics=False)."
        )
    legs, n_assets = len(model._vol_halflives()), len(model.mean_)
    if len(dynamics.intercept) != model.latent_dim or dynamics.residuals.shape[1] != n_assets \
            or dynamics.variances.shape[0] != legs:
        raise DataError(
            f"these dynamics were learned for another model ({len(dynamics.intercept)} code dimensions, "
            f"{dynamics.residuals.shape[1]} assets, {dynamics.variances.shape[0]} volatility legs); this one has "
            f"{model.latent_dim}, {n_assets} and {legs}. Learn them for it: fit_dynamics(model, returns)."
        )


def _run(model, dynamics: Dynamics, codes, variances, horizon: int, rng: np.random.Generator, *,
         shift=None, noise: bool = True, out=None) -> np.ndarray:
    """Drive paths forward from states: ``codes`` (n, k), ``variances`` (n_legs, n, n_assets) → (n, horizon, n_assets).

    Works in float32, one day at a time: memory is the output plus a few (n, n_assets) arrays.
    """
    _check_dynamics(model, dynamics)
    n, n_assets = codes.shape[0], variances.shape[-1]
    if out is None:
        out = np.empty((n, horizon, n_assets), dtype=np.float32)
    loadings = model.model_.decoder.loadings
    B = loadings.weight.detach().numpy().astype(np.float32)  # (n_assets, k)
    b = loadings.bias.detach().numpy().astype(np.float32)
    mean = model.mean_.astype(np.float32)
    floor = model._vol_floor().astype(np.float32)
    # No simulated day moves an asset further than clip training volatilities (30 by default), the range of
    # surprises the model itself reads: a surprise drawn from a calm day's shock, replayed in a storm's
    # volatility, would otherwise give daily log returns of 10 or more, and feed them back into the volatility.
    largest = (model.model_.clip * model.scale_).astype(np.float32)
    long_run = np.square(model.scale_).astype(np.float32)
    halflives = model._vol_halflives()
    lams = [np.float32(0.5 ** (1.0 / h)) for h in halflives]
    pull = np.float32(1 - lams[int(np.argmax(halflives))])  # toward the training variance, at the slowest rate
    A = dynamics.transition.astype(np.float32)
    c = dynamics.intercept.astype(np.float32)
    innovations = dynamics.innovations.astype(np.float32)
    residuals = dynamics.residuals
    z = np.asarray(codes, dtype=np.float32).copy()
    v = np.array(variances, dtype=np.float32, copy=True)
    shift = None if shift is None else np.asarray(shift, dtype=np.float32)
    follows = dynamics.follows
    day = rng.integers(0, len(innovations), n)
    for t in range(horizon):
        if t > 0:
            # Stationary bootstrap: carry on with the real day after the last one drawn (when it is in the pool),
            # or jump to a random day, with probability 1 / window: blocks of ``window`` days on average.
            stay = follows[day] & (rng.random(n) >= 1.0 / model.window)
            day = np.where(stay, day + 1, rng.integers(0, len(innovations), n))
        z = c + z @ A.T + innovations[day]
        x = (z if shift is None else z + shift) @ B.T + b
        if noise:
            x += residuals[day]
        sigma = np.sqrt(v.max(axis=0))
        np.maximum(sigma, floor, out=sigma)
        x *= sigma  # now the demeaned return
        np.clip(x, -largest, largest, out=x)
        out[:, t] = x + mean
        np.square(x, out=x)
        for leg, lam in enumerate(lams):
            v[leg] *= lam
            v[leg] += (1 - lam) * x
            v[leg] += pull * (long_run - v[leg])
    if not np.isfinite(out).all():  # never a silently broken path
        raise DataError(
            f"the simulated returns overflowed: the codes' learned dynamics amplify shocks (transition norm "
            f"{np.linalg.norm(dynamics.transition, 2):.3g}), as when the model barely uses some code dimensions "
            "(latent_dim large for the data, or few epochs). Refit with a smaller latent_dim or more epochs, or "
            "sample from the static prior (sample(n, dynamics=False))."
        )
    return out


def simulate(model: FinVAE, returns: pd.DataFrame | np.ndarray, horizon: int = 20, n_paths: int = 1000,
             random_state: int | np.random.RandomState | np.random.Generator | None = None, *,
             dynamics: Dynamics | None = None, shift: ArrayLike | None = None, noise: bool = True) -> np.ndarray:
    """Paths of log returns for the days after the last date of ``returns``, from the state on that date.

    Every path starts from the code and EWMA variances after that date
    (:func:`state_at`) and runs ``horizon`` days through the dynamic model
    (module docstring). Only rows up to that last date are used.

    Parameters
    ----------
    model : FinVAE
        Fitted.
    returns : DataFrame of shape (n_days, n_assets) or array-like
        Daily returns with the model's assets, ending on the date to simulate
        from; at least ``window`` rows.
    horizon : int, default=20
        Days per path.
    n_paths : int, default=1000
        Number of paths.
    random_state : int, RandomState, Generator or None
        Seed; the same seed gives the same paths.
    dynamics : Dynamics, default=None
        The dynamic prior (:func:`fit_dynamics`); default: learned from ``returns``.
    shift : array-like of shape (latent_dim,), default=None
        Added to every simulated day's code before decoding (a stress scenario:
        ``strength * concept_vector``, see :func:`finvae.concepts.stress_scenarios`).
    noise : bool, default=True
        Draw the residuals (False: the decoded codes only).

    Returns
    -------
    paths : ndarray of shape (n_paths, horizon, n_assets), float32
        Log returns if ``returns`` are (the model simulates whatever returns it was fitted on).

    Examples
    --------
    >>> from finvae.simulation import simulate
    >>> paths = simulate(model, returns.loc[:"2020-03-16"], horizon=10, n_paths=500, random_state=0)  # doctest: +SKIP
    >>> paths.shape                                                     # doctest: +SKIP
    (500, 10, 20)
    """
    horizon = _positive_int(horizon, "horizon")
    dynamics, codes, v = starting_states(model, returns, n_paths, dynamics)
    if shift is not None:
        shift = np.asarray(shift, dtype=np.float64)
        if shift.shape != (model.latent_dim,):
            raise DataError(f"shift has shape {shift.shape}; this model's codes have {model.latent_dim} values.")
        if not np.isfinite(shift).all():
            raise DataError(f"shift holds NaN or infinite values ({shift.tolist()}); pass finite numbers.")
    return _run(model, dynamics, codes, v, horizon, _generator(random_state), shift=shift, noise=noise)


def starting_states(model: FinVAE, returns: pd.DataFrame | np.ndarray, n_paths: int,
                    dynamics: Dynamics | None = None) -> tuple[Dynamics, np.ndarray, np.ndarray]:
    """The state after the last date of ``returns``, once per path, and the dynamics to run it with.

    Returns ``(dynamics, codes, variances)``: ``dynamics`` as given, or learned from ``returns`` (in the
    same pass); ``codes`` of shape (n_paths, latent_dim) and ``variances`` of shape (n_legs, n_paths,
    n_assets), read-only views of the one state; :func:`simulate_from_states` runs them.
    """
    n_paths = _positive_int(n_paths, "n_paths")
    states = _states(model, returns)  # one pass gives the start state, and the dynamics when none are given
    code, variances = _last_state(model, states)
    if dynamics is None:
        dynamics = _dynamics(model, *states[:5])
    codes = np.broadcast_to(code, (n_paths, len(code)))
    variances = np.broadcast_to(variances[:, None, :], (variances.shape[0], n_paths, variances.shape[1]))
    return dynamics, codes, variances


def simulate_from_states(model: FinVAE, dynamics: Dynamics, codes: ArrayLike, variances: ArrayLike, horizon: int,
                         random_state: int | np.random.RandomState | np.random.Generator | None = None, *,
                         shift: ArrayLike | None = None, noise: bool = True) -> np.ndarray:
    """Paths from given states (one path per state): codes (n, latent_dim), variances (n_legs, n, n_assets)."""
    return _run(model, dynamics, np.asarray(codes), np.asarray(variances), _positive_int(horizon, "horizon"),
                _generator(random_state), shift=shift, noise=noise)


def sample_static(model: FinVAE, n: int, seed: int | None = None, *, volatility: ArrayLike | None = None,
                  noise: bool = True) -> np.ndarray:
    """Windows from the static prior: each day's code drawn from N(0, I) independently and decoded.

    A draw from ``p(x) = ∫ p(x | z) p(z) dz`` with no memory (``FinVAE.sample(dynamics=False)``): with
    ``noise``, the likelihood's Gaussian noise is added; returns at one volatility, ``volatility`` (default
    the training standard deviation). ``seed`` seeds torch's generator (None: its current state).

    Examples
    --------
    >>> windows = sample_static(model, 500, seed=0)     # doctest: +SKIP
    >>> windows.shape                                   # doctest: +SKIP
    (500, 20, 20)
    """
    import torch

    from finvae.training import seeded

    check_is_fitted(model)
    n = _positive_int(n, "n")
    with seeded(seed, exclusive=True), torch.no_grad():
        z = torch.randn(n, model.window, model.latent_dim)
        decoded = model.model_.decode(z)
        if noise:
            decoded = decoded + model.model_.log_scale.exp() * torch.randn_like(decoded)
    scale = model.scale_ if volatility is None else np.asarray(volatility, dtype=np.float64)
    return model.mean_ + scale * decoded.numpy().astype(np.float64)


def sample(model: FinVAE, n: int, random_state: int | np.random.RandomState | np.random.Generator | None = None, *,
           returns: pd.DataFrame | np.ndarray | None = None, dynamics: Dynamics | None = None,
           noise: bool = True) -> np.ndarray:
    """Windows of ``model.window`` days, each started from the state after a random date of the history.

    Parameters
    ----------
    model : FinVAE
        Fitted.
    n : int
        Number of windows.
    random_state : int, RandomState, Generator or None
    returns : DataFrame, default=None
        The history to learn the dynamics and draw start dates from (e.g. the training returns).
    dynamics : Dynamics, default=None
        Already learned dynamics (:func:`fit_dynamics`); one of ``returns`` and ``dynamics`` is needed.
    noise : bool, default=True

    Returns
    -------
    windows : ndarray of shape (n, window, n_assets), float64

    Examples
    --------
    >>> from finvae.simulation import sample
    >>> windows = sample(model, 100, random_state=0, dynamics=model.dynamics_)    # doctest: +SKIP
    >>> windows.shape                                                           # doctest: +SKIP
    (100, 20, 20)
    """
    n = _positive_int(n, "n")
    if dynamics is None:
        if returns is None:
            raise DataError("sampling with dynamics needs a history: pass returns (e.g. the training returns) "
                            "or dynamics=fit_dynamics(model, returns).")
        dynamics = fit_dynamics(model, returns)
    _check_dynamics(model, dynamics)
    rng = _generator(random_state)
    start = rng.integers(0, len(dynamics.codes), n)
    windows = _run(model, dynamics, dynamics.codes[start], dynamics.variances[:, start], model.window, rng,
                   noise=noise)
    return windows.astype(np.float64)
