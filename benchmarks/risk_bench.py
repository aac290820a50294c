"""FinVAE as a risk model beside the covariance and VaR estimators quants use.

Run ``python benchmarks/risk_bench.py`` (one command, a printed table; 330 s
measured on 2 CPU cores shared with other jobs, 206 s of it the 23 FinVAE fits,
two at a time, with the default 60 epochs at most); ``--figure PATH``
also draws FinVAE's VaR with its exceptions (``docs/risk_var.png``);
``--quick`` is a smoke-test size.

Data: the bundled sample's 20 stocks, daily log returns, 1990-2022.

**GMV.** At the close of every 21st trading day from the last day of 1999,
each estimator forecasts a covariance and the global-minimum-variance
portfolio (fully invested, shorts allowed, ``w ∝ Σ⁻¹1``) is held for the next
21 days (the last block ends with 2022). FinVAE is refitted every year on an
expanding window (all returns up to the previous 31 December, default
parameters, ``--epochs`` passes at most) and forecasts with
:func:`finvae.risk.covariance_forecasts` over the 21-day holding period
(``horizon=21``, divided by 21: its average daily covariance); the
``FinVAE h=1`` row forecasts only the next day, for comparison. The other
estimators see the last 252 days: sample, Ledoit-Wolf and OAS (scikit-learn),
RiskMetrics EWMA with decays 0.94 and 0.97 (on those 252 days), a PCA 3-factor
model (loadings plus a diagonal residual), skfolio's GerberCovariance,
DenoiseCovariance, GeodesicShrinkageCovariance and EWCovariance (half-life
40), all at their defaults; and equal weight. Figures: the annualised
volatility of the held days' returns, and the mean Gaussian negative
log-likelihood of the held days' return vectors under the forecast (mean 0),
in nats per day (equal weight has none). ``skfolio`` columns: the mean
Mahalanobis and diagonal calibration ratios, the bias statistic of inverse
volatility portfolios and their QLIKE, from skfolio's
``covariance_forecast_evaluation`` over the same 21-day blocks (each fold's
covariance is the forecast above).

**VaR.** The 99 % one-day VaR of the equal-weight portfolio (mean of the
log returns), forecast at each close for the next day, 2000-2022:
RiskMetrics (EWMA 0.94 of the portfolio's squared returns, normal quantile),
250-day historical simulation, GARCH(1,1) with Student-t innovations and
filtered historical simulation (the same GARCH volatility times the empirical
quantile of its standardized residuals), both refitted yearly on an expanding
window by the ``arch`` package and filtered with fixed parameters within the
year; FinVAE's :meth:`~finvae.FinVAE.value_at_risk` from the yearly refits.
Figures: the mean and largest VaR (what a VaR costs), the exception rate, Kupiec's proportion-of-failures p-value,
Christoffersen's independence p-value, the share of consecutive 250-day
blocks in the Basel green (≤ 4 exceptions), yellow (5-9) and red (≥ 10)
zones; and an expected-shortfall backtest, Acerbi and Székely's (2014) Z2
``= Σ L_t 1{L_t > VaR_t} / (T α ES_t) - 1`` (0 when ES is right, positive
when it is too small) with a one-sided normal-approximation p-value of its
daily terms.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy import stats

from finvae import FinVAE
from finvae.datasets import load_sp500_sample, prices_to_returns
from finvae.risk import covariance_forecasts, tail_risk

HOLD = 21
WINDOW = 252
ALPHA = 0.01


# ------------------------------------------------------------ estimators on the last 252 days


def _ewma(decay: float):
    def estimate(x: np.ndarray) -> np.ndarray:
        weights = decay ** np.arange(len(x))[::-1]
        weights /= weights.sum()
        centred = x - weights @ x
        return (centred * weights[:, None]).T @ centred

    return estimate


def _pca3(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0)
    sample = centred.T @ centred / (len(x) - 1)
    values, vectors = np.linalg.eigh(sample)
    top = vectors[:, -3:] * np.sqrt(values[-3:])
    factor = top @ top.T
    return factor + np.diag(np.maximum(np.diag(sample - factor), 1e-12))


def _sklearn(cls):
    def estimate(x: np.ndarray) -> np.ndarray:
        return cls().fit(x).covariance_

    return estimate


def _skfolio(make):
    def estimate(x: np.ndarray) -> np.ndarray:
        return make().fit(x).covariance_

    return estimate


def baselines() -> dict:
    from sklearn.covariance import OAS, EmpiricalCovariance, LedoitWolf

    estimators = {
        "sample": _sklearn(EmpiricalCovariance),
        "Ledoit-Wolf": _sklearn(LedoitWolf),
        "OAS": _sklearn(OAS),
        "EWMA 0.94": _ewma(0.94),
        "EWMA 0.97": _ewma(0.97),
        "PCA 3-factor": _pca3,
    }
    try:
        from skfolio.moments import DenoiseCovariance, EWCovariance, GeodesicShrinkageCovariance, GerberCovariance
    except ImportError:
        print("skfolio not installed: its estimators are left out")
        return estimators
    estimators |= {
        "Gerber": _skfolio(GerberCovariance),
        "Denoise": _skfolio(DenoiseCovariance),
        "Geodesic": _skfolio(GeodesicShrinkageCovariance),
        "EW hl 40": _skfolio(lambda: EWCovariance(half_life=40)),
    }
    return estimators


# ------------------------------------------------------------ FinVAE refits


def _fit(train: pd.DataFrame, epochs: int, random_state: int) -> FinVAE:
    import torch

    torch.set_num_threads(1)
    return FinVAE(epochs=epochs, random_state=random_state, verbose=0).fit(train)


def fit_yearly(returns: pd.DataFrame, years: list[int], epochs: int, random_state: int, n_jobs: int) -> dict:
    """One FinVAE per year, fitted on every return up to the previous 31 December."""
    fits = Parallel(n_jobs=n_jobs)(
        delayed(_fit)(returns.loc[: f"{year - 1}-12-31"], epochs, random_state) for year in years
    )
    return dict(zip(years, fits, strict=True))


def _model_for(models: dict, date: pd.Timestamp):
    """The latest model fitted on data up to ``date`` (its year's model from the year's last close on)."""
    usable = [year for year in models if pd.Timestamp(f"{year - 1}-12-31") <= date]
    return max(usable)


# ------------------------------------------------------------ GMV


def gmv_weights(cov: np.ndarray) -> np.ndarray:
    ones = np.ones(len(cov))
    w = np.linalg.solve(cov, ones)
    return w / w.sum()


def gaussian_nll(days: np.ndarray, cov: np.ndarray) -> np.ndarray:
    sign, logdet = np.linalg.slogdet(cov)
    if sign <= 0:
        return np.full(len(days), np.nan)
    solved = np.linalg.solve(cov, days.T).T
    return 0.5 * (cov.shape[0] * np.log(2 * np.pi) + logdet + np.einsum("ij,ij->i", days, solved))


def gmv_table(returns, rebalance, end_pos, forecasts: dict) -> tuple[pd.DataFrame, dict]:
    values = returns.to_numpy()
    rows, held_returns = {}, {}
    for name, covs in forecasts.items():
        daily, nll = [], []
        for p in rebalance:
            days = values[p + 1 : min(p + HOLD, end_pos) + 1]
            if covs is None:
                w = np.full(values.shape[1], 1.0 / values.shape[1])
            else:
                w = gmv_weights(covs[p])
                nll.append(gaussian_nll(days, covs[p]))
            daily.append(days @ w)
        daily = np.concatenate(daily)
        held_returns[name] = daily
        rows[name] = {
            "gmv_vol": daily.std(ddof=1) * np.sqrt(252),
            "nll": np.concatenate(nll).mean() if nll else np.nan,
        }
    return pd.DataFrame(rows).T, held_returns


def skfolio_evaluation(returns, rebalance, forecasts: dict) -> pd.DataFrame:
    """skfolio's covariance_forecast_evaluation on the same 21-day blocks, each fold's covariance the forecast."""
    try:
        from skfolio.model_selection import covariance_forecast_evaluation
    except ImportError:
        return pd.DataFrame()
    from sklearn.base import BaseEstimator

    class Precomputed(BaseEstimator):
        """Looks up the forecast made at the last date of the training fold."""

        def __init__(self, table=None):
            self.table = table

        def fit(self, X, y=None):
            self.covariance_ = self.table[X.index[-1]]
            return self

    start = rebalance[0] - WINDOW + 1
    X = returns.iloc[start : rebalance[-1] + HOLD + 1]
    rows = {}
    for name, covs in forecasts.items():
        if covs is None:
            continue
        table = {returns.index[p]: covs[p] for p in rebalance}
        ev = covariance_forecast_evaluation(Precomputed(table), X, train_size=WINDOW, test_size=HOLD)
        summary = ev.summary()
        rows[name] = {
            "mahalanobis": summary.loc["Mahalanobis ratio", "mean"],
            "diagonal": summary.loc["Diagonal ratio", "mean"],
            "bias": float(ev.bias_statistic[0]),
            "qlike": summary.loc["Portfolio QLIKE", "mean"],
        }
    return pd.DataFrame(rows).T


# ------------------------------------------------------------ VaR


def kupiec(exceptions: np.ndarray, alpha: float) -> float:
    n, x = len(exceptions), int(exceptions.sum())
    p_hat = x / n
    log_null = (n - x) * np.log1p(-alpha) + x * np.log(alpha)
    log_alt = (n - x) * np.log1p(-p_hat) + (x * np.log(p_hat) if x else 0.0) if 0 < x < n else 0.0
    return float(stats.chi2.sf(-2 * (log_null - log_alt), 1))


def christoffersen(exceptions: np.ndarray) -> float:
    e = exceptions.astype(int)
    prev, curr = e[:-1], e[1:]
    n00 = int(((prev == 0) & (curr == 0)).sum())
    n01 = int(((prev == 0) & (curr == 1)).sum())
    n10 = int(((prev == 1) & (curr == 0)).sum())
    n11 = int(((prev == 1) & (curr == 1)).sum())

    def ll(count0, count1, p):
        return (count0 * np.log1p(-p) if count0 else 0.0) + (count1 * np.log(p) if count1 else 0.0)

    p01 = n01 / max(n00 + n01, 1)
    p11 = n11 / max(n10 + n11, 1)
    p = (n01 + n11) / max(n00 + n01 + n10 + n11, 1)
    if p in (0.0, 1.0):
        return 1.0
    stat = -2 * (ll(n00 + n10, n01 + n11, p) - ll(n00, n01, p01) - ll(n10, n11, p11))
    return float(stats.chi2.sf(stat, 1))


def basel_zones(exceptions: np.ndarray) -> tuple[float, float, float]:
    blocks = len(exceptions) // 250
    counts = exceptions[: blocks * 250].reshape(blocks, 250).sum(axis=1)
    return float((counts <= 4).mean()), float(((counts >= 5) & (counts <= 9)).mean()), float((counts >= 10).mean())


def acerbi_szekely_z2(losses, var, es, alpha) -> tuple[float, float]:
    terms = losses * (losses > var) / (alpha * es) - 1.0
    z2 = float(terms.mean())
    p = float(stats.norm.sf(z2 / (terms.std(ddof=1) / np.sqrt(len(terms)))))
    return z2, p


def classical_var(portfolio: pd.Series, forecast_dates: pd.DatetimeIndex, years: list[int]) -> dict:
    """RiskMetrics, historical simulation, GARCH(1,1)-t and FHS VaR and ES at each forecast date."""
    z = stats.norm.ppf(ALPHA)
    out = {}
    # RiskMetrics: EWMA 0.94 of squared returns, known at each close for the next day.
    r = portfolio.to_numpy()
    var = np.empty(len(r))
    var[0] = r[:250].var()
    for t in range(1, len(r)):
        var[t] = 0.94 * var[t - 1] + 0.06 * r[t - 1] ** 2
    sigma_next = pd.Series(np.sqrt(0.94 * var + 0.06 * r**2), index=portfolio.index)  # for day t+1, at t
    s = sigma_next.loc[forecast_dates].to_numpy()
    out["RiskMetrics"] = (-z * s, s * stats.norm.pdf(z) / ALPHA)
    # Historical simulation on the last 250 days.
    rolling = portfolio.rolling(250)
    q = rolling.quantile(ALPHA).loc[forecast_dates].to_numpy()
    es_hs = portfolio.rolling(250).apply(lambda w: -w[w <= np.quantile(w, ALPHA)].mean(), raw=True)
    out["HS 250"] = (-q, es_hs.loc[forecast_dates].to_numpy())
    # GARCH(1,1)-t and FHS, refitted yearly on an expanding window.
    from arch import arch_model

    scaled = 100 * portfolio
    garch_var, garch_es, fhs_var, fhs_es = (pd.Series(np.nan, index=forecast_dates) for _ in range(4))
    for year in years:
        in_year = forecast_dates[(forecast_dates >= pd.Timestamp(f"{year - 1}-12-31"))
                                 & (forecast_dates < pd.Timestamp(f"{year}-12-31"))]
        if not len(in_year):
            continue
        train_end = scaled.index.searchsorted(pd.Timestamp(f"{year - 1}-12-31"), side="right")
        am = arch_model(scaled.iloc[: scaled.index.get_loc(in_year[-1]) + 1], mean="Constant", vol="GARCH",
                        p=1, q=1, dist="t")
        res = am.fit(last_obs=train_end, disp="off")
        fc = res.forecast(horizon=1, start=in_year[0], reindex=False)
        mu = fc.mean.loc[in_year].to_numpy()[:, 0]
        sd = np.sqrt(fc.variance.loc[in_year].to_numpy()[:, 0])
        nu = float(res.params["nu"])
        q_t = am.distribution.ppf(ALPHA, [nu])
        t_q = stats.t.ppf(ALPHA, nu)
        es_t = stats.t.pdf(t_q, nu) / ALPHA * (nu + t_q**2) / (nu - 1) * np.sqrt((nu - 2) / nu)
        garch_var.loc[in_year] = -(mu + sd * q_t) / 100
        garch_es.loc[in_year] = (-mu + sd * es_t) / 100
        std_resid = (res.resid / res.conditional_volatility).iloc[:train_end].dropna().to_numpy()
        q_emp = np.quantile(std_resid, ALPHA)
        tail = std_resid[std_resid <= q_emp]
        fhs_var.loc[in_year] = -(mu + sd * q_emp) / 100
        fhs_es.loc[in_year] = -(mu + sd * tail.mean()) / 100
    out["GARCH(1,1)-t"] = (garch_var.to_numpy(), garch_es.to_numpy())
    out["FHS"] = (fhs_var.to_numpy(), fhs_es.to_numpy())
    return out


def finvae_var(returns, models: dict, forecast_dates) -> tuple[np.ndarray, np.ndarray]:
    var = pd.Series(np.nan, index=forecast_dates)
    es = pd.Series(np.nan, index=forecast_dates)
    for year, model in models.items():
        in_year = forecast_dates[(forecast_dates >= pd.Timestamp(f"{year - 1}-12-31"))
                                 & (forecast_dates < pd.Timestamp(f"{year}-12-31"))]
        if not len(in_year):
            continue
        history = returns.loc[: in_year[-1]]
        both = tail_risk(model, history, alpha=ALPHA).loc[in_year]
        var.loc[in_year], es.loc[in_year] = both["value_at_risk"], both["expected_shortfall"]
    return var.to_numpy(), es.to_numpy()


def var_table(losses: np.ndarray, methods: dict) -> pd.DataFrame:
    rows = {}
    for name, (var, es) in methods.items():
        ok = np.isfinite(var)
        exceptions = losses[ok] > var[ok]
        green, yellow, red = basel_zones(exceptions)
        z2, p_z2 = acerbi_szekely_z2(losses[ok], var[ok], es[ok], ALPHA)
        rows[name] = {
            "days": int(ok.sum()),
            "mean_var": float(var[ok].mean()),
            "max_var": float(var[ok].max()),
            "exceptions": exceptions.mean(),
            "kupiec_p": kupiec(exceptions, ALPHA),
            "christoffersen_p": christoffersen(exceptions),
            "green": green,
            "yellow": yellow,
            "red": red,
            "es_z2": z2,
            "es_z2_p": p_z2,
        }
    return pd.DataFrame(rows).T


# ------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=2000, help="first evaluated year (default %(default)s)")
    parser.add_argument("--end", type=int, default=2022, help="last evaluated year (default %(default)s)")
    parser.add_argument("--epochs", type=int, default=60, help="FinVAE's epochs per fit (default %(default)s)")
    parser.add_argument("--random-state", type=int, default=0, help="FinVAE's random_state (default 0)")
    parser.add_argument("--n-jobs", type=int, default=2, help="FinVAE fits in parallel (default 2)")
    parser.add_argument("--figure", default=None, help="write FinVAE's VaR and its exceptions to this PNG")
    parser.add_argument("--quick", action="store_true", help="smoke-test size: 2002-2003, 2 epochs, 5 stocks")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Run the benchmark and print its tables.

    Returns
    -------
    dict with DataFrames ``gmv`` (GMV volatility, NLL and skfolio's
    calibration figures per estimator) and ``var`` (VaR/ES backtests per method).
    """
    args = parse_args(argv)
    started = time.perf_counter()
    # RRC's stale early-1990s quotes are known; the stale-price warning is meant for new data.
    returns = prices_to_returns(load_sp500_sample(), stale_days=None)
    if args.quick:
        returns, args.start, args.end, args.epochs = returns.iloc[:, :5].loc["1997":"2003"], 2002, 2003, 2
    returns = returns.loc[: f"{args.end}-12-31"]
    years = list(range(args.start, args.end + 1))
    index = returns.index
    first = index.searchsorted(pd.Timestamp(f"{args.start}-01-01")) - 1  # the last close before the start
    end_pos = len(index) - 1
    rebalance = list(range(first, end_pos, HOLD))

    t0 = time.perf_counter()
    models = fit_yearly(returns, years, args.epochs, args.random_state, args.n_jobs)
    fit_seconds = time.perf_counter() - t0

    values = returns.to_numpy()
    forecasts: dict[str, dict | None] = {}
    t0 = time.perf_counter()
    for horizon in (HOLD, 1):
        covs: dict[int, np.ndarray] = {}
        for year, model in models.items():
            mine = [p for p in rebalance if _model_for(models, index[p]) == year]
            if not mine:
                continue
            history = returns.iloc[: mine[-1] + 1]
            block = covariance_forecasts(model, history, horizon=horizon, dates=index[mine])
            for p in mine:
                covs[p] = block.loc[index[p]].to_numpy() / horizon
        forecasts[f"FinVAE h={horizon}"] = covs
    forecast_seconds = time.perf_counter() - t0
    for name, estimate in baselines().items():
        forecasts[name] = {p: estimate(values[p - WINDOW + 1 : p + 1]) for p in rebalance}
    forecasts["equal weight"] = None

    gmv, _ = gmv_table(returns, rebalance, end_pos, forecasts)
    gmv = gmv.join(skfolio_evaluation(returns, rebalance, forecasts))

    portfolio = returns.mean(axis=1)
    forecast_dates = index[first:end_pos]  # each forecasts the next day
    losses = -portfolio.iloc[first + 1 : end_pos + 1].to_numpy()
    methods = classical_var(portfolio, forecast_dates, years)
    t0 = time.perf_counter()
    methods["FinVAE"] = finvae_var(returns, models, forecast_dates)
    var_seconds = time.perf_counter() - t0
    var = var_table(losses, methods)

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(f"GMV, rebalanced every {HOLD} days, {index[first + 1].date()} .. {index[end_pos].date()} "
              f"({len(rebalance)} rebalances; FinVAE refitted yearly, {args.epochs} epochs at most)")
        shown = gmv.copy()
        shown["gmv_vol"] = shown["gmv_vol"].map("{:.2%}".format)
        print(shown.to_string(float_format="{:.3f}".format))
        print(f"\n{1 - ALPHA:.0%} one-day VaR of the equal-weight portfolio, {len(losses)} days")
        shown = var.copy()
        for column in ("exceptions", "green", "yellow", "red"):
            shown[column] = shown[column].map("{:.2%}".format)
        print(shown.to_string(float_format="{:.3f}".format))
        print(f"\nFinVAE: {len(models)} fits {fit_seconds:.0f} s; covariance forecasts {forecast_seconds:.1f} s; "
              f"VaR and ES of every date {var_seconds:.1f} s; total {time.perf_counter() - started:.0f} s")

    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        from finvae.plotting import plot_var_backtest

        next_day = pd.Series(-losses, index=index[first + 1 : end_pos + 1])
        forecast = pd.Series(methods["FinVAE"][0], index=next_day.index)  # each VaR placed on the day it covers
        fig = plot_var_backtest(next_day, forecast, title=f"FinVAE {1 - ALPHA:.0%} one-day VaR, equal-weight portfolio")
        temporary = f"{args.figure}.tmp.png"  # written whole, then moved into place
        fig.savefig(temporary, dpi=110, bbox_inches="tight")
        os.replace(temporary, args.figure)
        print(f"figure written to {args.figure}")
    return {"gmv": gmv, "var": var}


if __name__ == "__main__":
    main()
