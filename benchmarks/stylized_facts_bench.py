"""Synthetic returns against real ones: discriminative score, Quant GANs' metrics, stylized facts, out-of-sample VaR.

Run ``python benchmarks/stylized_facts_bench.py [--seed N] [--runs 5] [--figure docs/synthetic_windows.png]``
(measured 4.4 to 7.3 minutes on two cores shared with other jobs, about 5 CPU-minutes;
``--quick`` for a smoke run).

FinVAE (default settings) is fitted on the bundled sample's daily log returns
(20 stocks) from 1990-01-03 to ``--end`` (2019-12-31). Every generator below
is built from that period only and compared with its real returns:

- ``FinVAE dynamics``: :meth:`FinVAE.sample` / :func:`finvae.simulation.simulate_from_states`
  with the dynamic prior learned on the training returns (:mod:`finvae.simulation`);
- ``FinVAE static``: :meth:`FinVAE.sample` without a history (codes iid N(0, I),
  Gaussian noise, the training volatility), the model's former ``sample``;
- ``iid Gaussian``: days iid N(mean, sample covariance);
- ``bootstrap days``: real days drawn iid with replacement (all stocks of a day together);
- ``FHS``: filtered historical simulation: real days standardised by a RiskMetrics
  EWMA volatility (lambda 0.94), drawn iid and driven through that EWMA from a
  real date's volatility;
- ``GARCH-t CCC``: a GARCH(1,1) with Student-t innovations per stock (``arch``),
  tied by the constant correlation of the standardised residuals (Gaussian
  copula, t margins), started from a real date's conditional variance;
- ``block bootstrap``: a stationary block bootstrap of real days (mean block
  20 days): nearly real, the reference for how close a generator can look.

Generators with a state start each window (and each long path) from a random
training date's state. Metrics:

1. **Discriminative score** (TimeGAN, Yoon et al. 2019, ``metrics/discriminative_metrics.py``):
   all stride-1 windows of 20 days of the real period against as many synthetic
   ones, both scaled per stock with the real data's mean and standard deviation
   (``--scaling standard``; TimeGAN min-max scales, ``--scaling minmax``: on daily
   returns the range is set by a few crash days and squeezes almost every day
   into a sliver of [0, 1], where the GRU learns nothing in 1000 steps: every
   generator, even iid Gaussian days, then scores 0.008-0.025);
   each class split 80/20 at random; a GRU (hidden = features / 2 = 10, its last
   state into one logit) trained with Adam (lr 1e-3) on batches of 128 real and
   128 synthetic windows; score = |test accuracy - 0.5|, mean over ``--runs``
   runs (new split and weights each), in ``--workers`` processes. Changed for CPU
   time: ``--iterations`` (default 1000, TimeGAN 2000); real and synthetic halves
   of a batch go through the GRU in one pass (the loss is the mean of TimeGAN's
   two terms).
2. **Quant GANs' metrics** (Wiese et al. 2020) on ``--paths`` paths of ``--length``
   days per generator against the real training series, per stock, then averaged:
   the L2 distance between the autocorrelations of r, |r| and r**2 at lags
   1..20 and 1..250, of the leverage effect corr(r_t, r_{t+k}**2), k = 1..20, and
   the Wasserstein (EMD) distance of the 1-, 5-, 20- and 100-day returns.
3. **Stylized facts** (:func:`finvae.concepts.stylized_facts`, non-overlapping
   windows, with its gradient-boosting two-sample test), plus: the mean
   correlation on the worst 10 % of days of the equal-weight portfolio (correlation
   in sell-offs), the leverage effect at lags 1-10, and the spread (standard
   deviation) of the log volatility of the equal-weight portfolio across windows.
4. **Out of sample** (2020-01-01 .. last date): from the state on each date,
   ``--oos-paths`` paths of 20 days (:meth:`FinVAE.simulate`, dynamics learned on
   the training period; FHS alike); the share of dates whose realised
   equal-weight portfolio return (buy and hold, simple) falls below the paths'
   1 %, 5 %, 95 % and 99 % quantiles, for the next day and the next 20 days,
   and the same for each stock's next-day return (averaged over stocks).
5. **Memory**: the peak of one ``simulate`` call of 10,000 paths x 20 days x 500
   stocks (a synthetic market; tracemalloc) and the process's maximum RSS.

The numbers depend on the seed and the machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time

import numpy as np
import pandas as pd
import torch
from scipy import stats

from finvae import FinVAE
from finvae._atomic import write_csv
from finvae.concepts import return_windows, stylized_facts
from finvae.datasets import load_sp500_sample, prices_to_returns
from finvae.simulation import _states, fit_dynamics, simulate_from_states
from finvae.windows import ewma_scale

FHS_LAMBDA = 0.94
BLOCK = 20
QUANTILES = (0.01, 0.05, 0.95, 0.99)


# ----------------------------------------------------------------------------- baselines


class Baselines:
    """The non-FinVAE generators, built on the training returns ``train`` (days x stocks, no NaN)."""

    def __init__(self, train: np.ndarray, seed: int, quick: bool = False) -> None:
        self.train = train
        self.mean = train.mean(axis=0)
        self.cov = np.cov(train, rowvar=False)
        demeaned = train - self.mean
        # FHS: EWMA lambda 0.94, the variance after each day, and the standardised days.
        halflife = np.log(0.5) / np.log(FHS_LAMBDA)
        var0 = demeaned.var(axis=0)
        scale = ewma_scale(np.vstack([demeaned, np.full((1, train.shape[1]), np.nan)]), halflife=halflife,
                           initial_var=var0, floor=0.1 * np.sqrt(var0)).astype(np.float64)
        self.fhs_z = demeaned / scale[:-1]
        self.fhs_var = scale[1:] ** 2  # the variance after each day
        self.fhs_floor = 0.1 * np.sqrt(var0)
        # GARCH(1,1)-t per stock, constant correlation of the standardised residuals.
        from arch import arch_model

        params, cond_var, resid, self.garch_flags = [], [], [], []
        for j in range(train.shape[1]):
            res = arch_model(100 * train[:, j], mean="Constant", vol="GARCH", p=1, q=1, dist="t").fit(
                disp="off", show_warning=False, options={"maxiter": 50 if quick else 200})
            self.garch_flags.append(int(res.convergence_flag))  # 0: converged; 8: line search ended on a flat spot
            mu, omega, alpha, beta, nu = (float(res.params[k]) for k in ("mu", "omega", "alpha[1]", "beta[1]", "nu"))
            params.append((mu, omega, alpha, beta, nu))
            eps = 100 * train[:, j] - mu
            sigma2 = np.asarray(res.conditional_volatility) ** 2
            cond_var.append(omega + alpha * eps**2 + beta * sigma2)  # the variance after each day
            resid.append(eps / np.sqrt(sigma2))
        self.garch = np.array(params)  # (n_stocks, 5), in percent
        self.garch_var = np.array(cond_var).T
        self.garch_chol = np.linalg.cholesky(np.corrcoef(np.array(resid)))
        self.rng = np.random.default_rng(seed)

    def iid_gaussian(self, n: int, length: int) -> np.ndarray:
        return self.rng.multivariate_normal(self.mean, self.cov, size=(n, length))

    def bootstrap(self, n: int, length: int) -> np.ndarray:
        return self.train[self.rng.integers(0, len(self.train), (n, length))]

    def block_bootstrap(self, n: int, length: int) -> np.ndarray:
        """Stationary bootstrap (Politis & Romano): blocks of geometric length, mean ``BLOCK`` days."""
        t = len(self.train)
        idx = np.empty((n, length), dtype=np.int64)
        idx[:, 0] = self.rng.integers(0, t, n)
        for d in range(1, length):
            restart = self.rng.random(n) < 1.0 / BLOCK
            idx[:, d] = np.where(restart, self.rng.integers(0, t, n), (idx[:, d - 1] + 1) % t)
        return self.train[idx]

    def fhs(self, n: int, length: int, start_var: np.ndarray | None = None) -> np.ndarray:
        v = self.fhs_var[self.rng.integers(0, len(self.fhs_var), n)] if start_var is None else start_var.copy()
        out = np.empty((len(v), length, self.train.shape[1]))
        for d in range(length):
            eps = np.maximum(np.sqrt(v), self.fhs_floor) * self.fhs_z[self.rng.integers(0, len(self.fhs_z), len(v))]
            out[:, d] = self.mean + eps
            v = FHS_LAMBDA * v + (1 - FHS_LAMBDA) * eps**2
        return out

    def garch_t(self, n: int, length: int) -> np.ndarray:
        mu, omega, alpha, beta, nu = self.garch.T
        v = self.garch_var[self.rng.integers(0, len(self.garch_var), n)]
        out = np.empty((n, length, len(mu)))
        for d in range(length):
            g = self.rng.standard_normal((n, len(mu))) @ self.garch_chol.T
            z = stats.t.ppf(stats.norm.cdf(g), nu) * np.sqrt((nu - 2) / nu)
            eps = np.sqrt(v) * z
            out[:, d] = (mu + eps) / 100
            v = omega + alpha * eps**2 + beta * v
        return out


# ----------------------------------------------------------------------------- metrics


class GRUDiscriminator(torch.nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(dim, max(1, dim // 2), batch_first=True)
        self.out = torch.nn.Linear(max(1, dim // 2), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, h = self.gru(x)
        return self.out(h[-1]).squeeze(-1)


def discriminative_score(real: np.ndarray, synthetic: np.ndarray, seed: int, iterations: int,
                         scaling: str = "standard", batch: int = 128) -> float:
    """TimeGAN's post-hoc discriminative score: |accuracy - 0.5| of a GRU on a held-out 20 %.

    ``scaling="minmax"`` is TimeGAN's (per stock, the real data's minimum and maximum);
    ``"standard"`` divides by the real data's standard deviation instead (after its mean).
    """
    torch.set_num_threads(1)
    if scaling == "minmax":
        lo, width = real.min(axis=(0, 1)), real.max(axis=(0, 1)) - real.min(axis=(0, 1)) + 1e-7
    else:
        lo, width = real.mean(axis=(0, 1)), real.std(axis=(0, 1))
    scale = lambda x: torch.from_numpy(((x - lo) / width).astype(np.float32))  # noqa: E731
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    split = {}
    for name, x in (("real", real), ("synthetic", synthetic)):
        order = rng.permutation(len(x))
        cut = int(0.8 * len(x))
        split[name] = scale(x[order[:cut]]), scale(x[order[cut:]])
    model = GRUDiscriminator(real.shape[2])
    optimiser = torch.optim.Adam(model.parameters())
    loss = torch.nn.BCEWithLogitsLoss()
    (real_train, real_test), (syn_train, syn_test) = split["real"], split["synthetic"]
    labels = torch.cat([torch.ones(batch), torch.zeros(batch)])
    for _ in range(iterations):
        # one pass over both halves: the mean of TimeGAN's two losses, half its sum (Adam does not mind the scale)
        x = torch.cat([real_train[rng.integers(0, len(real_train), batch)],
                       syn_train[rng.integers(0, len(syn_train), batch)]])
        optimiser.zero_grad()
        loss(model(x), labels).backward()
        optimiser.step()
    with torch.no_grad():
        correct = (model(real_test) > 0).sum().item() + (model(syn_test) <= 0).sum().item()
    return abs(correct / (len(real_test) + len(syn_test)) - 0.5)


def _acf(paths: np.ndarray, lags: int) -> np.ndarray:
    """Autocorrelation at lags 1..lags per stock, pooled over paths (n, days, stocks): (lags, stocks)."""
    x = paths - paths.mean(axis=(0, 1))
    var = (x**2).mean(axis=(0, 1))
    return np.array([(x[:, :-k] * x[:, k:]).mean(axis=(0, 1)) / var for k in range(1, lags + 1)])


def _leverage(paths: np.ndarray, lags: int) -> np.ndarray:
    """corr(r_t, r_{t+k}**2), k = 1..lags, per stock, pooled over paths: (lags, stocks)."""
    out = []
    for k in range(1, lags + 1):
        a = paths[:, :-k].reshape(-1, paths.shape[2])
        b = paths[:, k:].reshape(-1, paths.shape[2]) ** 2
        a, b = a - a.mean(axis=0), b - b.mean(axis=0)
        out.append((a * b).sum(axis=0) / np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0)))
    return np.array(out)


def _horizon_returns(paths: np.ndarray, k: int) -> np.ndarray:
    """Overlapping k-day sums within each path, pooled: (n_sums, stocks)."""
    c = np.concatenate([np.zeros((paths.shape[0], 1, paths.shape[2])), np.cumsum(paths, axis=1)], axis=1)
    return (c[:, k:] - c[:, :-k]).reshape(-1, paths.shape[2])


def quant_gan_metrics(real: np.ndarray, synthetic: np.ndarray) -> dict[str, float]:
    """Distances between real (1, days, stocks) and synthetic (n, length, stocks) paths, averaged over stocks."""
    out = {}
    for name, f in (("r", lambda x: x), ("|r|", np.abs), ("r^2", np.square)):
        for lags in (20, 250):
            d = _acf(f(real), lags) - _acf(f(synthetic), lags)
            out[f"ACF {name} 1-{lags}"] = float(np.sqrt((d**2).sum(axis=0)).mean())
    d = _leverage(real, 20) - _leverage(synthetic, 20)
    out["leverage 1-20"] = float(np.sqrt((d**2).sum(axis=0)).mean())
    for k in (1, 5, 20, 100):
        a, b = _horizon_returns(real, k), _horizon_returns(synthetic, k)
        out[f"EMD {k}-day"] = float(np.mean([stats.wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])]))
    return out


def extra_facts(windows: np.ndarray, paths: np.ndarray) -> dict[str, float]:
    """Correlation in sell-offs, leverage at lags 1-10, and the spread of volatility levels across windows."""
    days = paths.reshape(-1, paths.shape[2])
    portfolio = days.mean(axis=1)
    worst = days[portfolio <= np.quantile(portfolio, 0.1)]
    corr = np.corrcoef(worst, rowvar=False)
    window_vol = windows.mean(axis=2).std(axis=1)
    return {
        "mean correlation, worst 10 % days": float(corr[np.triu_indices_from(corr, 1)].mean()),
        "leverage corr(r_t, r_t+k^2), k 1-10": float(_leverage(paths, 10).mean()),
        "sd of log portfolio vol across windows": float(np.log(window_vol[window_vol > 0]).std()),
    }


# ----------------------------------------------------------------------------- out of sample


def _portfolio(paths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal-weight buy-and-hold simple return over the first day and over all days of each path."""
    with np.errstate(over="ignore"):  # FHS's pure EWMA can run off to inf over 20 days from a stormy state
        return np.expm1(paths[:, 0]).mean(axis=1), np.expm1(paths.sum(axis=1)).mean(axis=1)


def coverage(model, dynamics, baselines: Baselines, returns: pd.DataFrame, start: str, horizon: int,
             n_paths: int, seed: int) -> pd.DataFrame:
    """Share of dates whose realised return falls below each quantile of the simulated ones."""
    values = returns.to_numpy()
    ends, codes, _, variances, dates, _ = _states(model, returns)  # causal: date t's state uses rows <= t
    keep = np.flatnonzero((dates >= pd.Timestamp(start)) & (ends + horizon < len(values)))
    # FHS state on the same dates: the EWMA variance after each date, the training mean, training pool.
    halflife = np.log(0.5) / np.log(FHS_LAMBDA)
    demeaned = values - baselines.mean
    var0 = baselines.train.var(axis=0)
    fhs_scale = ewma_scale(np.vstack([demeaned, np.full((1, values.shape[1]), np.nan)]), halflife=halflife,
                           initial_var=var0, floor=0.1 * np.sqrt(var0)).astype(np.float64)
    hits = {name: {key: [] for key in ("day", "20 days", "stock day")} for name in ("FinVAE", "FHS")}
    by_date = []  # FinVAE's horizon return per date: realised, and the simulated quantiles
    rng = np.random.default_rng(seed)
    for piece in np.array_split(keep, max(1, len(keep) // 25)):
        n = len(piece) * n_paths
        state = np.repeat(piece, n_paths)
        generated = {
            "FinVAE": simulate_from_states(model, dynamics, codes[state], variances[:, state], horizon, rng),
            "FHS": baselines.fhs(n, horizon, start_var=fhs_scale[ends[state] + 1] ** 2),
        }
        for name, paths in generated.items():
            paths = paths.reshape(len(piece), n_paths, horizon, -1)
            for i, p in enumerate(piece):
                realised = values[ends[p] + 1 : ends[p] + 1 + horizon][None]
                day, month = _portfolio(paths[i])
                real_day, real_month = _portfolio(realised)
                hits[name]["day"].append(real_day[0] < np.quantile(day, QUANTILES))
                hits[name]["20 days"].append(real_month[0] < np.quantile(month, QUANTILES))
                if name == "FinVAE":
                    by_date.append((dates[p], real_month[0], *np.quantile(month, QUANTILES)))
                hits[name]["stock day"].append(
                    (realised[0, 0] < np.quantile(paths[i][:, 0], QUANTILES, axis=0)).mean(axis=1))
    rows = {(name, key): np.mean(v, axis=0) for name, h in hits.items() for key, v in h.items()}
    table = pd.DataFrame(rows, index=[f"{q:.0%}" for q in QUANTILES]).T * 100
    table.index.names = ["generator", "return"]
    table.attrs["n_dates"] = len(keep)
    table.attrs["first"], table.attrs["last"] = dates[keep[0]].date(), dates[keep[-1]].date()
    # The horizon windows of consecutive dates overlap: the per-date rows show how the hits cluster.
    table.attrs["by_date"] = pd.DataFrame(
        by_date, columns=["date", "realised"] + [f"q{q:.0%}" for q in QUANTILES]).set_index("date")
    return table


# ----------------------------------------------------------------------------- memory


def memory_check(seed: int, n_assets: int = 500, n_paths: int = 10_000, horizon: int = 20) -> dict[str, float]:
    """Peak memory of ``simulate`` for ``n_paths`` x ``horizon`` x ``n_assets`` on a synthetic one-factor market.

    The model (1 epoch) and its dynamics are built first; tracemalloc (which numpy reports its arrays to) then
    measures the peak of the simulate call alone, and the resident set size is read before and after.
    """
    import resource
    import tracemalloc

    rng = np.random.default_rng(seed)
    days = 800
    vol = 0.01 * np.exp(np.cumsum(rng.normal(0, 0.05, days)) * 0.3)
    values = vol[:, None] * (rng.standard_t(5, (days, 1)) * np.linspace(0.5, 1.5, n_assets) +
                             rng.standard_normal((days, n_assets)))
    returns = pd.DataFrame(values, index=pd.bdate_range("2000-01-03", periods=days),
                           columns=[f"S{i}" for i in range(n_assets)])
    model = FinVAE(epochs=1, random_state=seed, verbose=0).fit(returns)
    dynamics = fit_dynamics(model, returns)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    start = time.perf_counter()
    paths = model.simulate(returns, horizon=horizon, n_paths=n_paths, random_state=seed, dynamics=dynamics)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"output MB": paths.nbytes / 1e6, "peak traced MB": peak / 1e6, "seconds": seconds,
            "max RSS before MB": rss_before, "max RSS after MB": rss_after}


# ----------------------------------------------------------------------------- figure


def figure(path: str, real_windows: np.ndarray, synthetic_windows: np.ndarray, real_paths: np.ndarray,
           synthetic: dict[str, np.ndarray], seed: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, 4, figsize=(13, 6), layout="constrained")
    for row, (name, windows) in enumerate((("real", real_windows), ("FinVAE dynamics", synthetic_windows))):
        for col, i in enumerate(rng.choice(len(windows), 3, replace=False)):
            ax = axes[row, col]
            ax.plot(np.expm1(np.cumsum(windows[i], axis=0)) * 100, color="0.6", lw=0.8)
            ax.plot(np.expm1(np.cumsum(windows[i], axis=0)).mean(axis=1) * 100, color="k", lw=2)
            ax.set_title(f"{name} window {col + 1}", fontsize=9)
            ax.axhline(0, color="0.4", lw=0.5)
        axes[row, 0].set_ylabel("cumulative return (%)")
    ax = axes[0, 3]
    lags = np.arange(1, 251)
    ax.plot(lags, _acf(np.abs(real_paths), 250).mean(axis=1), color="k", lw=2, label="real")
    for name, paths in synthetic.items():
        ax.plot(lags, _acf(np.abs(paths), 250).mean(axis=1), lw=1, label=name)
    ax.axhline(0, color="0.4", lw=0.5)
    ax.set_xscale("log")
    ax.set_title("ACF of |r| (mean over stocks)", fontsize=9)
    ax.set_xlabel("lag (days)")
    ax.legend(fontsize=7, frameon=False)
    ax = axes[1, 3]
    for name, windows in (("real", real_windows), ("FinVAE dynamics", synthetic_windows)):
        vol = np.log(windows.mean(axis=2).std(axis=1) * np.sqrt(252))
        ax.hist(vol, bins=40, density=True, histtype="step", lw=2 if name == "real" else 1,
                color="k" if name == "real" else None, label=name)
    ax.set_title("portfolio vol per window (log, annualised)", fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.suptitle("Real 20-day windows (1990-2019) against FinVAE's synthetic ones (grey: stocks, black: "
                 "equal-weight portfolio)", fontsize=10)
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=directory, suffix=".png", delete=False) as handle:
        fig.savefig(handle.name, dpi=110)
    os.replace(handle.name, path)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def main(argv=None) -> dict[str, pd.DataFrame]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--end", default="2019-12-31", help="last training date (default 2019-12-31)")
    parser.add_argument("--runs", type=int, default=5, help="discriminative-score runs per generator")
    parser.add_argument("--iterations", type=int, default=1000, help="GRU training steps (TimeGAN: 2000)")
    parser.add_argument("--scaling", choices=("standard", "minmax"), default="standard",
                        help="inputs of the discriminative score's GRU (TimeGAN: minmax)")
    parser.add_argument("--workers", type=int, default=2, help="processes for the discriminative score")
    parser.add_argument("--paths", type=int, default=16, help="long paths per generator")
    parser.add_argument("--length", type=int, default=1000, help="days per long path")
    parser.add_argument("--oos-paths", type=int, default=1000, help="paths per date out of sample")
    parser.add_argument("--figure", default=None, help="write the real-vs-synthetic figure to this PNG")
    parser.add_argument("--coverage-csv", default=None,
                        help="write FinVAE's out-of-sample horizon return per date (realised, simulated quantiles)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, figures meaningless")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    clock = time.perf_counter()

    returns = prices_to_returns(load_sp500_sample(), stale_days=None)
    fit_kwargs = {}
    if args.quick:
        returns = returns.iloc[-900:, :4]
        args.end = str(returns.index[599].date())
        args.runs, args.iterations, args.paths, args.length, args.oos_paths, args.workers = 1, 20, 2, 260, 20, 1
        fit_kwargs = {"epochs": 2}
    train = returns.loc[: args.end]
    model = FinVAE(random_state=args.seed, verbose=0, **fit_kwargs).fit(train)
    dynamics = fit_dynamics(model, train)
    print(f"FinVAE fitted on {train.index[0].date()} .. {train.index[-1].date()} ({len(train)} days x "
          f"{train.shape[1]} stocks) in {time.perf_counter() - clock:.1f} s, seed {args.seed}; {dynamics!r}")

    values = train.to_numpy()
    base = Baselines(values, args.seed, quick=args.quick)
    real_sliding = return_windows(train, model.window, stride=1)
    n, w = len(real_sliding), model.window
    rng = np.random.default_rng(args.seed)
    starts = rng.integers(0, len(dynamics.codes), args.paths)
    long_finvae = simulate_from_states(model, dynamics, dynamics.codes[starts], dynamics.variances[:, starts],
                                       args.length, args.seed).astype(np.float64)
    n_static = -(-args.paths * args.length // w)
    generators = {
        "FinVAE dynamics": (model.sample(n, random_state=args.seed, dynamics=dynamics), long_finvae),
        # iid days: its long paths are windows end to end
        "FinVAE static": (model.sample(n, random_state=args.seed, dynamics=False),
                          model.sample(n_static, random_state=args.seed + 1, dynamics=False).reshape(-1, train.shape[1])
                          [: args.paths * args.length].reshape(args.paths, args.length, -1)),
        "iid Gaussian": (base.iid_gaussian(n, w), base.iid_gaussian(args.paths, args.length)),
        "bootstrap days": (base.bootstrap(n, w), base.bootstrap(args.paths, args.length)),
        "FHS": (base.fhs(n, w), base.fhs(args.paths, args.length)),
        "GARCH-t CCC": (base.garch_t(n, w), base.garch_t(args.paths, args.length)),
        "block bootstrap": (base.block_bootstrap(n, w), base.block_bootstrap(args.paths, args.length)),
    }
    flags = [f for f in base.garch_flags if f]
    print(f"generators built at {time.perf_counter() - clock:.0f} s; GARCH-t fits: "
          f"{len(base.garch_flags) - len(flags)} of {len(base.garch_flags)} converged"
          + (f", {len(flags)} stopped with optimiser code(s) {sorted(set(flags))}" if flags else ""))

    # 1. discriminative score
    jobs = [(real_sliding, windows, args.seed + run, args.iterations, args.scaling)
            for windows, _ in generators.values()
            for run in range(args.runs)]
    if args.workers > 1:
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with context.Pool(args.workers) as pool:
            scores = pool.starmap(discriminative_score, jobs)
    else:
        scores = [discriminative_score(*job) for job in jobs]
    disc = pd.DataFrame(np.reshape(scores, (len(generators), args.runs)).T, columns=list(generators))
    print(f"\n1. Discriminative score (TimeGAN protocol, GRU, {args.iterations} steps, {args.scaling} scaling, "
          f"{args.runs} runs; "
          f"{n} real stride-1 windows of {w} days vs {n} synthetic; 0 is best) [{time.perf_counter() - clock:.0f} s]")
    summary = pd.DataFrame({"mean": disc.mean(), "sd": disc.std(ddof=1) if args.runs > 1 else np.nan})
    print(summary.T.to_string(float_format=lambda v: f"{v:.3f}"))

    # 2. Quant GANs metrics
    real_path = values[None]
    quant = pd.DataFrame({name: quant_gan_metrics(real_path, paths) for name, (_, paths) in generators.items()})
    print(f"\n2. Quant GANs distances to the real series ({args.paths} paths x {args.length} days per generator; "
          f"mean over stocks; 0 is best) [{time.perf_counter() - clock:.0f} s]")
    print(quant.to_string(float_format=lambda v: f"{v:.4f}"))

    # 3. stylized facts (non-overlapping windows) and the classifier two-sample test
    real_windows = return_windows(train, w)
    facts = None
    for name, (windows, paths) in generators.items():
        table = stylized_facts(real_windows, windows[::w], random_state=args.seed)  # every w-th: as many
        extra_real, extra_syn = extra_facts(real_windows, real_path), extra_facts(windows[::w], paths)
        table = pd.concat([table, pd.DataFrame([("dynamics", k, extra_real[k], extra_syn[k]) for k in extra_real],
                                               columns=table.columns)], ignore_index=True)
        if facts is None:
            facts = table[["group", "fact", "real"]].copy()
        facts[name] = table["synthetic"].to_numpy()
    print(f"\n3. Stylized facts ({len(real_windows)} real non-overlapping windows against as many synthetic; for the "
          f"distance and the accuracy, 'real' is the ideal value) [{time.perf_counter() - clock:.0f} s]")
    print(facts.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    gap = facts[list(generators)].sub(facts["real"], axis=0).abs()
    closer = {other: int((gap["FinVAE dynamics"] < gap[other]).sum()) for other in ("GARCH-t CCC", "FHS")}
    closer_q = {other: int((quant["FinVAE dynamics"] < quant[other]).sum()) for other in ("GARCH-t CCC", "FHS")}
    print("FinVAE dynamics closer to real than: " + ", ".join(
        f"{k} on {closer[k]} of {len(gap)} facts and {closer_q[k]} of {len(quant)} Quant GANs distances"
        for k in closer))

    # 4. out of sample
    oos = None
    if returns.index[-1] > pd.Timestamp(args.end):
        oos = coverage(model, dynamics, base, returns, str(pd.Timestamp(args.end) + pd.Timedelta(days=1)), w,
                       args.oos_paths, args.seed)
        print(f"\n4. Out of sample: % of {oos.attrs['n_dates']} dates ({oos.attrs['first']} .. {oos.attrs['last']}) "
              f"whose realised return falls below each quantile of {args.oos_paths} simulated paths (nominal: the "
              f"quantile); equal-weight portfolio next day and next {w} days, and each stock's next day "
              f"[{time.perf_counter() - clock:.0f} s]")
        print(oos.to_string(float_format=lambda v: f"{v:.1f}"))
        by_date = oos.attrs["by_date"]
        below = by_date["realised"] < by_date["q5%"]
        runs = int((below & ~below.shift(fill_value=False)).sum())
        every = [below.to_numpy()[k::w].mean() * 100 for k in range(w)]
        yearly = below.groupby(below.index.year).mean() * 100
        print(f"FinVAE, next {w} days below the 5 % quantile: {below.sum()} dates in {runs} runs; by year "
              + ", ".join(f"{year} {share:.1f} %" for year, share in yearly.items())
              + f"; every {w}th date only (non-overlapping windows, {len(below.to_numpy()[::w])} each): "
              f"{min(every):.1f}-{max(every):.1f} % (median {np.median(every):.1f} %)")
        if args.coverage_csv:
            write_csv(by_date, args.coverage_csv)

    memory = memory_check(args.seed, n_assets=50 if args.quick else 500, n_paths=200 if args.quick else 10_000)
    print(f"\n5. Memory: simulate, {200 if args.quick else 10_000} paths x 20 days x {50 if args.quick else 500} "
          f"stocks (synthetic market): output {memory['output MB']:.0f} MB, peak of the call "
          f"{memory['peak traced MB']:.0f} MB (tracemalloc), {memory['seconds']:.1f} s; process max RSS "
          f"{memory['max RSS before MB']:.0f} MB before, {memory['max RSS after MB']:.0f} MB after")

    if args.figure:
        figure(args.figure, real_windows, generators["FinVAE dynamics"][0][::w], real_path,
               {k: generators[k][1] for k in ("FinVAE dynamics", "GARCH-t CCC", "FHS")}, args.seed)
        print(f"\nfigure written to {args.figure}")
    print(f"\ntotal {time.perf_counter() - clock:.0f} s")
    return {"discriminative": disc, "quant": quant, "facts": facts, "coverage": oos, "memory": memory}


if __name__ == "__main__":
    main()
