"""Read latent factors as risk factors: exposures, and how much of the returns they explain.

Two questions a quant asks of any factor model, FinVAE included:

- :func:`exposures`: what is each asset's beta to each factor (and how much of
  its variance do the factors explain)? An OLS regression per asset.
- :func:`explained_variance`: out of sample, how much of the cross-section of
  returns does the model's reconstruction explain, beside PCA with the same
  number of factors fitted on the same training period?
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from finvae._exceptions import DataError
from finvae._validation import as_date_of, check_labels, check_not_levels

__all__ = ["explained_variance", "exposures"]

#: Default minimum number of joint observations per asset: about three months of daily data.
MIN_OBS = 60

#: Share of the dates used for training when ``explained_variance`` gets no ``train_end``
#: (the default split of ``sklearn.model_selection.train_test_split``, unshuffled).
DEFAULT_TRAIN_SHARE = 0.75


def _as_frame(data, what: str) -> pd.DataFrame:
    """A numeric DataFrame with unique dates, or a DataError naming the problem."""
    if isinstance(data, pd.Series):
        data = data.to_frame(name=data.name if data.name is not None else what)
    if not isinstance(data, pd.DataFrame):
        raise DataError(
            f"{what} must be a pandas DataFrame (dates × columns) or Series; got {type(data).__name__}."
        )
    if data.shape[1] == 0:
        raise DataError(f"{what} has no columns.")
    bad = [c for c, dtype in data.dtypes.items()
           if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)]
    if bad:
        raise DataError(
            f"{what} must be numeric, but column(s) {bad[:3]} are not (dtype {data[bad[0]].dtype})."
        )
    check_labels(data, what, sorted_dates=False)  # a regression needs no order
    values = data.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(values).any():
        raise DataError(f"{what} holds infinite values. Replace them with NaN (missing) or fix their source.")
    if what == "returns":
        check_not_levels(values, what)
    return data


def exposures(returns, factors, *, min_obs: int = MIN_OBS) -> pd.DataFrame:
    r"""Each asset's betas to the factors, and the R² of the regression.

    For every asset ``i`` an ordinary least-squares regression with intercept
    on the dates where the asset and all factors are observed:

    .. math::

        r_{i,t} = \alpha_i + \sum_k \beta_{i,k} f_{k,t} + \varepsilon_{i,t},
        \qquad
        R^2_i = 1 - \frac{\sum_t \hat\varepsilon_{i,t}^2}{\sum_t (r_{i,t} - \bar r_i)^2}.

    Parameters
    ----------
    returns : DataFrame of shape (n_dates, n_assets) or Series
        Asset returns, dates as index. NaN where missing.
    factors : DataFrame of shape (n_dates, n_factors) or Series
        Factor series, e.g. ``FinVAE.transform(returns)`` (whose first dates
        are NaN) or market factors. Dates are matched to ``returns`` by an
        inner join on the index; dates in only one of the two are ignored.
        FinVAE's factors are codes of returns in units of each asset's recent
        volatility, not returns: their spread changes far less than the
        returns' volatility (the market factor's about doubles from 2017 to
        2008, the index's volatility grows 5.5 times), so a constant beta on
        raw returns averages over volatility regimes (a market beta about 3
        times larger in 2008 than in 2017). Regressing
        ``returns / model.volatility(returns)`` instead matches their units.
    min_obs : int, default=60
        Fewest joint observations (dates where the asset *and* every factor
        are observed) for an asset to get a regression; never fewer than
        ``n_factors + 2``. Assets below it get a row of NaN and a warning.

    Returns
    -------
    DataFrame of shape (n_assets, n_factors + 1)
        Index: the assets (``returns.columns``). Columns: one beta per factor,
        named as the factors, then ``"r2"``. The intercept is estimated but
        not reported. An asset with constant returns gets NaN R², and one
        whose factors are collinear on its dates gets NaN everywhere (with a
        warning).

    Raises
    ------
    DataError
        On non-numeric, infinite or duplicated input, a factor named ``"r2"``,
        or no dates in common.

    Notes
    -----
    Missing values are handled pairwise per asset: for asset ``i`` the dates
    used are those where ``r_i`` and every factor are finite, so an asset that
    listed late is regressed on its own history only. Nothing is filled.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from finvae.factors import exposures
    >>> dates = pd.bdate_range("2020-01-01", periods=500)
    >>> rng = np.random.default_rng(0)
    >>> f = pd.DataFrame(rng.normal(size=(500, 1)), index=dates, columns=["market"])
    >>> r = pd.DataFrame({"A": 2 * f["market"], "B": -f["market"]}) + rng.normal(0, 0.1, (500, 2))
    >>> exposures(r, f).round(1)
       market   r2
    A     2.0  1.0
    B    -1.0  1.0
    """
    returns = _as_frame(returns, "returns")
    factors = _as_frame(factors, "factors")
    if "r2" in factors.columns:
        raise DataError("factors has a column named 'r2', which the output reserves for R². Rename it.")
    if int(min_obs) != min_obs or min_obs < 1:
        raise ValueError(f"min_obs must be a positive integer; got {min_obs!r}.")
    common = returns.index.intersection(factors.index, sort=False)
    if len(common) == 0:
        raise DataError(
            "returns and factors have no dates in common "
            f"(returns: {returns.index[0]} to {returns.index[-1]}, factors: {factors.index[0]} to "
            f"{factors.index[-1]}). Check that both are indexed by date."
        )
    # Rows in the order of returns (sorting is not required for OLS, but keeps it reproducible).
    common = returns.index[returns.index.isin(common)]
    y = returns.loc[common].to_numpy(dtype=np.float64, na_value=np.nan)
    f = factors.loc[common].to_numpy(dtype=np.float64, na_value=np.nan)
    n_factors = f.shape[1]
    needed = max(int(min_obs), n_factors + 2)
    design = np.column_stack([np.ones(len(f)), f])
    factors_ok = np.isfinite(f).all(axis=1)
    observed = np.isfinite(y) & factors_ok[:, None]

    out = np.full((y.shape[1], n_factors + 1), np.nan)
    too_few, collinear = [], []
    # Assets with the same observed dates share one design matrix: solve them in one lstsq
    # (with complete data that is every asset at once).
    patterns: dict[bytes, list[int]] = {}
    for j in range(y.shape[1]):
        patterns.setdefault(np.packbits(observed[:, j]).tobytes(), []).append(j)
    for cols in patterns.values():
        rows = observed[:, cols[0]]
        n = int(rows.sum())
        if n < needed:
            too_few.extend(returns.columns[cols])
            continue
        X, Y = design[rows], y[np.ix_(rows, cols)]  # only the block needed, not a copy of every row first
        coef, _, rank, _ = np.linalg.lstsq(X, Y, rcond=None)
        if rank < X.shape[1]:
            collinear.extend(returns.columns[cols])
            continue
        resid = Y - X @ coef
        sst = np.square(Y - Y.mean(axis=0)).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            # A constant asset (stale prices) has no variance to explain: NaN, not a rounding artefact.
            r2 = np.where(np.ptp(Y, axis=0) > 0, 1.0 - np.square(resid).sum(axis=0) / sst, np.nan)
        out[cols, :n_factors] = coef[1:].T
        out[cols, n_factors] = r2
    if too_few:
        warnings.warn(
            f"{len(too_few)} asset(s) have fewer than {needed} dates where the asset and every factor are "
            f"observed, so their exposures are NaN: {too_few[:5]}{' ...' if len(too_few) > 5 else ''}. "
            "Lower min_obs or pass a longer history.",
            stacklevel=2,
        )
    if collinear:
        warnings.warn(
            f"The factors are collinear on the dates of {len(collinear)} asset(s), so their betas are not "
            f"identified and are NaN: {collinear[:5]}. Drop a redundant factor.",
            stacklevel=2,
        )
    return pd.DataFrame(out, index=returns.columns.copy(), columns=[*factors.columns, "r2"])


def _pca_reconstruct(train: np.ndarray, test: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """PCA fitted on the complete rows of ``train``; each row of ``train`` and ``test`` reconstructed.

    A row with missing assets is projected by least squares on its observed
    assets only (with every asset observed this is the usual PCA projection),
    so a gap costs that row nothing but its own missing entries.
    """
    complete = np.isfinite(train).all(axis=1)
    if complete.sum() <= n_components:
        raise DataError(
            f"The training period has {int(complete.sum())} dates with every asset observed; PCA with "
            f"{n_components} component(s) needs more. Start the training period later or drop sparse assets."
        )
    pca = PCA(n_components=n_components).fit(train[complete])
    mean, V = pca.mean_, pca.components_.T  # V: (n_assets, k), orthonormal columns

    def project(block: np.ndarray) -> np.ndarray:
        out = np.full_like(block, np.nan)
        full = np.isfinite(block).all(axis=1)
        centred = block[full] - mean
        out[full] = mean + centred @ V @ V.T
        for t in np.flatnonzero(~full):
            seen = np.isfinite(block[t])
            if seen.sum() < n_components:
                continue
            coef, *_ = np.linalg.lstsq(V[seen], block[t, seen] - mean[seen], rcond=None)
            out[t] = mean + V @ coef
        return out

    return project(train), project(test)


def _total_r2(actual: np.ndarray, fitted: np.ndarray, mask: np.ndarray) -> float:
    """``1 - Σ(actual - fitted)² / Σ actual²`` over the entries in ``mask``."""
    if not mask.any():
        return float("nan")
    return float(1.0 - np.square(actual[mask] - fitted[mask]).sum() / np.square(actual[mask]).sum())


def explained_variance(
    model,
    returns: pd.DataFrame,
    *,
    train_end=None,
    n_components: int | None = None,
) -> pd.DataFrame:
    r"""Out-of-sample share of the returns a model reconstructs, beside PCA with as many factors.

    The dates are split at ``train_end``: the training period is every date up
    to and including it, the test period every later date. Returns are
    measured in **standardised units**: each asset's return divided by its
    standard deviation over the training period (``ddof=1``, not demeaned),

    .. math::

        z_{t,i} = r_{t,i} / \sigma_i^{\text{train}},

    so that every asset weighs the same whatever its volatility. The score of a
    reconstruction :math:`\hat z` over a period is the *total* R² (uncentred:
    the benchmark is a zero return, not the period's mean)

    .. math::

        R^2 = 1 - \frac{\sum_{t,i} (z_{t,i} - \hat z_{t,i})^2}{\sum_{t,i} z_{t,i}^2},

    summed over the entries where the return and both reconstructions are
    observed (the model's first dates, before a full window, are left out of
    both, so the two are compared on the same entries).

    - **The model**: if ``model`` is not fitted, a clone is fitted on the
      training period's returns (the caller's object is left unfitted); a
      fitted model is used as it is, and the caller vouches that it saw no
      returns after ``train_end``. It then reconstructs *all* the returns in
      one causal pass, ``model.reconstruct(returns)``, so each test date's
      window has its history; each reconstructed return is standardised like
      the actual one.
    - **PCA**: ``sklearn.decomposition.PCA(n_components)`` fitted on the
      standardised training returns (PCA centres on their training means),
      on the dates where every asset is observed; each date's cross-section
      is reconstructed from its own ``n_components`` scores (projection on the
      training components, least squares on the observed assets where some
      are missing).

    On the bundled S&P 500 sample (20 stocks, log returns, training period
    1990–2012, test period 2013–2022) this gives PCA R² of 0.391, 0.458 and
    0.569 out of sample with 1, 2 and 3 components.

    Parameters
    ----------
    model : estimator with ``reconstruct``, or None
        A FinVAE (or any estimator whose ``reconstruct(returns)`` returns a
        DataFrame like ``returns``, NaN where it has no reconstruction).
        None compares nothing and reports PCA alone.
    returns : DataFrame of shape (n_dates, n_assets)
        Daily returns, sorted dates as index, NaN where missing.
    train_end : date-like or None, default=None
        Last date of the training period (inclusive). None takes the first
        75 % of the dates, as ``train_test_split(shuffle=False)`` would.
    n_components : int or None, default=None
        Number of PCA factors; None takes ``model.latent_dim`` (required when
        ``model`` is None).

    Returns
    -------
    DataFrame
        One row per method (the model's class name, then ``"PCA"``), columns
        ``n_factors``, ``r2_train`` (in sample) and ``r2_test`` (out of
        sample). ``.attrs`` holds ``train_end``, ``test_start`` and
        ``units="returns / training-period std"``.

    Raises
    ------
    DataError
        On unusable returns, an empty training or test period, or an asset
        with no variance in the training period.

    Examples
    --------
    >>> from finvae.datasets import load_sp500_sample, prices_to_returns
    >>> from finvae.factors import explained_variance
    >>> returns = prices_to_returns(load_sp500_sample(), stale_days=None)   # RRC's early stale quotes: known
    >>> explained_variance(None, returns, train_end="2012-12-31", n_components=3).round(2)
         n_factors  r2_train  r2_test
    PCA          3      0.48     0.57
    """
    returns = _as_frame(returns, "returns")
    check_labels(returns, "returns")  # and sorted: the split at train_end is in time
    if model is not None and not hasattr(model, "reconstruct"):
        raise TypeError(f"{type(model).__name__} has no reconstruct method; explained_variance needs one.")
    if n_components is None:
        if model is None or not hasattr(model, "latent_dim"):
            raise ValueError("Pass n_components: it cannot be read from the model (no latent_dim).")
        n_components = int(model.latent_dim)
    if int(n_components) != n_components or n_components < 1:
        raise ValueError(f"n_components must be a positive integer; got {n_components!r}.")
    n_components = int(n_components)
    if n_components > returns.shape[1]:
        raise ValueError(f"n_components={n_components} exceeds the number of assets ({returns.shape[1]}).")

    if train_end is None:
        train_end = returns.index[max(int(len(returns) * DEFAULT_TRAIN_SHARE) - 1, 0)]
    elif isinstance(returns.index, pd.DatetimeIndex):
        train_end = as_date_of(returns.index, train_end, "train_end")  # a plain date, in the index's zone
    in_train = np.asarray(returns.index <= train_end)
    if not in_train.any() or in_train.all():
        raise DataError(
            f"train_end={train_end!r} leaves an empty {'training' if not in_train.any() else 'test'} period: "
            f"returns run from {returns.index[0]} to {returns.index[-1]}."
        )

    values = returns.to_numpy(dtype=np.float64, na_value=np.nan)
    sigma = np.nanstd(values[in_train], axis=0, ddof=1)
    flat = ~(sigma > 0)
    if flat.any():
        raise DataError(
            f"Asset(s) {returns.columns[flat][:3].tolist()} have no variance in the training period "
            "(or fewer than two observations), so they cannot be standardised. Drop them."
        )
    z = values / sigma
    z_train_hat, z_test_hat = _pca_reconstruct(z[in_train], z[~in_train], n_components)
    pca_hat = np.vstack([z_train_hat, z_test_hat])
    mask = np.isfinite(z) & np.isfinite(pca_hat)

    rows, labels = [], []
    if model is not None:
        try:
            check_is_fitted(model)
        except NotFittedError:
            model = clone(model).fit(returns.loc[in_train])
        recon = model.reconstruct(returns)
        if isinstance(recon, pd.DataFrame):
            recon = recon.reindex(index=returns.index, columns=returns.columns)
        recon = np.asarray(recon, dtype=np.float64)
        if recon.shape != values.shape:
            raise ValueError(
                f"{type(model).__name__}.reconstruct gave shape {recon.shape}; expected {values.shape}."
            )
        model_hat = recon / sigma
        mask &= np.isfinite(model_hat)
        # The model's factor count: its latent size where it has one, else the PCA's.
        rows.append((int(getattr(model, "latent_dim", n_components)),
                     _total_r2(z[in_train], model_hat[in_train], mask[in_train]),
                     _total_r2(z[~in_train], model_hat[~in_train], mask[~in_train])))
        labels.append(type(model).__name__)
    rows.append((n_components,
                 _total_r2(z[in_train], pca_hat[in_train], mask[in_train]),
                 _total_r2(z[~in_train], pca_hat[~in_train], mask[~in_train])))
    labels.append("PCA")
    table = pd.DataFrame(rows, index=labels, columns=["n_factors", "r2_train", "r2_test"])
    table.attrs.update(train_end=returns.index[in_train][-1], test_start=returns.index[~in_train][0],
                       units="returns / training-period std")
    return table
