"""skfolio interop: :class:`FinVAECovariance`, FinVAE's covariance forecast as a skfolio covariance estimator.

skfolio is an optional extra (``pip install finvae[skfolio]``); this module is
imported only when ``finvae.FinVAECovariance`` is first used.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import _fit_context, clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted

try:
    from skfolio.moments import BaseCovariance
except ImportError as error:  # pragma: no cover - exercised only without skfolio
    raise ImportError(
        "finvae.FinVAECovariance needs skfolio, an optional extra: pip install 'finvae[skfolio]'."
    ) from error

from finvae import risk
from finvae._exceptions import DataError
from finvae.estimator import FinVAE

__all__ = ["FinVAECovariance"]


class FinVAECovariance(BaseCovariance):
    """FinVAE's forecast covariance of the next ``horizon`` days, as a skfolio covariance estimator.

    ``fit(X)`` fits a clone of ``estimator`` (default ``FinVAE(verbose=0)``)
    on the returns ``X`` and sets ``covariance_`` to its forecast at ``X``'s
    last date (:func:`finvae.risk.covariance`), divided by ``horizon``: the
    average daily covariance over the holding period, in the per-observation
    units skfolio's optimisers and evaluations expect. With ``refit=False``
    and a fitted ``estimator``, the model is used as it is and only the
    forecast is made: a model fitted once on a long history can then serve
    many rebalancing dates cheaply. Cross-validation (skfolio's
    ``cross_val_predict``, scikit-learn's ``clone``) copies parameters, not
    fitted state: pass the model as ``sklearn.frozen.FrozenEstimator(model)``,
    which a clone keeps fitted.

    Missing returns (NaN) are FinVAE's to handle (:class:`finvae.FinVAE`):
    late listings and gaps are allowed, an asset with no return at all in
    ``X`` is an error. Rows on which no asset has a return (holidays of a
    merged calendar, as a skfolio fold may hold) are left out before the fit
    and the forecast. The forecast is made at ``X``'s last row with a return;
    that date needs ``min_coverage`` of the assets observed.

    Parameters
    ----------
    estimator : FinVAE, optional
        The model (its parameters); default ``FinVAE(verbose=0)``.
    horizon : int, default=1
        Holding period in days (e.g. 21 for a monthly rebalance): the
        volatility forecast mean-reverts over it.
    refit : bool, default=True
        Fit a clone of ``estimator`` on ``X`` (True), or use the fitted
        ``estimator`` as it is (False).
    assume_centered, nearest, higham, higham_max_iteration
        As in :class:`skfolio.moments.BaseCovariance`: with ``nearest=True``
        the forecast is replaced by the nearest positive definite matrix
        (it is positive semi-definite by construction; this guards the
        Cholesky factorisation of near-singular forecasts).

    Attributes
    ----------
    covariance_ : ndarray of shape (n_assets, n_assets)
    location_ : ndarray of shape (n_assets,)
        The mean of ``X`` (0 with ``assume_centered=True``).
    estimator_ : FinVAE
        The model used.

    Examples
    --------
    >>> from skfolio.optimization import MeanRisk
    >>> from skfolio.prior import EmpiricalPrior
    >>> from finvae import FinVAECovariance
    >>> portfolio = MeanRisk(prior_estimator=EmpiricalPrior(covariance_estimator=FinVAECovariance(horizon=21)))
    >>> portfolio.fit(returns.loc["2010":"2019"])     # doctest: +SKIP
    """

    # scikit-learn's declaration, checked at fit: "no" for a flag would otherwise read as True.
    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"]), None],  # a FinVAE, or FrozenEstimator(model)
        "horizon": [Interval(Integral, 1, None, closed="left")],
        "refit": ["boolean"],
        "assume_centered": ["boolean"],
        "nearest": ["boolean"],
        "higham": ["boolean"],
        "higham_max_iteration": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        estimator: FinVAE | None = None,
        horizon: int = 1,
        refit: bool = True,
        assume_centered: bool = False,
        nearest: bool = True,
        higham: bool = False,
        higham_max_iteration: int = 100,
    ) -> None:
        super().__init__(
            assume_centered=assume_centered,
            nearest=nearest,
            higham=higham,
            higham_max_iteration=higham_max_iteration,
        )
        self.estimator = estimator
        self.horizon = horizon
        self.refit = refit

    @_fit_context(prefer_skip_nested_validation=False)  # the FinVAE it fits checks its own parameters
    def fit(self, X, y=None, **fit_params) -> FinVAECovariance:
        """Fit the model (unless ``refit=False``) and set the forecast covariance at ``X``'s last date.

        ``fit_params`` is skfolio's signature for metadata routing; FinVAE takes none, so any given
        (e.g. ``sample_weight``) is an error rather than silently ignored.
        """
        if fit_params:
            raise TypeError(f"FinVAECovariance.fit takes no fit parameters (FinVAE weighs every date alike); got "
                            f"{sorted(fit_params)}.")
        horizon = risk._check_horizon(self.horizon)
        rows = risk._trading_rows(X)
        if rows is not None:  # holidays of a merged calendar: no trading day, for the fit or the forecast
            X = X.iloc[rows] if hasattr(X, "iloc") else np.asarray(X)[rows]
        if self.refit:
            base = self.estimator if self.estimator is not None else FinVAE(verbose=0)
            self.estimator_ = clone(base).fit(X)
        else:
            if self.estimator is None:
                raise ValueError("refit=False needs a fitted FinVAE as estimator.")
            try:
                check_is_fitted(self.estimator)
            except NotFittedError:
                if hasattr(self.estimator, "model_"):  # fitted, then changed by set_params: its message says what to do
                    raise
                raise NotFittedError(
                    "refit=False needs a fitted FinVAE, and this one is not fitted. A clone (as in cross-validation) "
                    "drops a model's fit: pass estimator=sklearn.frozen.FrozenEstimator(model), which keeps it."
                ) from None
            self.estimator_ = self.estimator
        covariance = np.asarray(risk.covariance(self.estimator_, X, horizon=horizon), dtype=np.float64)
        if not np.isfinite(covariance).all():
            last = np.asarray(X, dtype=np.float64)[-1]
            coverage = float(np.mean(~np.isnan(last)))
            if coverage < self.estimator_.min_coverage:
                raise DataError(
                    f"no covariance forecast at the last date of X: {int((~np.isnan(last)).sum())} of {len(last)} "
                    f"assets have a return there, fewer than min_coverage ({self.estimator_.min_coverage:.0%}), so "
                    "FinVAE scores no day there. End X on a day with more quotes, or lower the FinVAE's min_coverage."
                )
            raise DataError(
                "no covariance forecast at the last date of X: it needs a scored date (window "
                f"{self.estimator_.window}) and at least {risk.MIN_DAYS} scored days in its lookback. "
                "Pass a longer history."
            )
        values = np.asarray(X, dtype=np.float64)
        self.n_features_in_ = values.shape[1]
        names = getattr(X, "columns", None)
        if names is not None and all(isinstance(c, str) for c in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        self.location_ = np.zeros(values.shape[1]) if self.assume_centered else np.nanmean(values, axis=0)
        self._set_covariance(covariance / horizon)
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing returns are FinVAE's to handle
        return tags
