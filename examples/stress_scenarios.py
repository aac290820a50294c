"""The 2008 crisis as a direction in FinVAE's latent space, applied to the end of 2019, checked against March 2020.

Run ``python examples/stress_scenarios.py [--out DIR] [--seed N]`` (about 10 s).

1. Fit :class:`finvae.FinVAE` on the bundled sample's daily log returns from
   its first date (1990-01-03) to 2019-12-31 inclusive: nothing after 2019.
2. The crisis vector: the mean daily code of 2008-09-01 … 2009-03-31 minus the
   mean code of every other date with a code up to 2019-12-31, with its
   block-bootstrap interval and the noise baseline (the same seven months
   moved to random other dates) that says whether it is a real direction.
3. The window of the last 20 trading days of 2019, moved along the vector with
   strengths 0 (its plain reconstruction), 1, 2 and 3, decoded in the trailing
   volatility known on 2019-12-31 (and, as a second question, in the crisis's
   average trailing volatility), with each scenario's buy-and-hold return for
   the equal-weight portfolio of the 20 stocks.
   Then the same strengths as *distributions*: 2,000 paths of 20 days simulated
   from the state on 2019-12-31 (:meth:`FinVAE.simulate`, dynamics learned on
   1990-2019), with every simulated day's code moved along the vector: the
   quantiles of the portfolio's P&L per strength.
4. What actually happened: the equal-weight portfolio over the 20 trading days
   after 2019, over its worst 20 trading days ending in March 2020, where
   those days' codes sat along the crisis vector, and (hindsight, to check
   the decoder rather than to forecast) what the 2019 window moved that far
   decodes to.

Last, the unstressed simulation from the state on the day before that worst
window (returns up to that day only): how likely the model found such a loss.

Writes to ``--out``: ``scenarios_simulated.png`` (bands of the simulated
paths per strength), ``scenarios.png`` (the scenarios side by side, cumulative
returns per stock and of the portfolio), ``scenarios_vs_2020.png`` (the
portfolio's path in each scenario beside the real one of February-March 2020)
and ``scenarios.csv`` (the tidy scenario windows).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from finvae import FinVAE  # noqa: E402
from finvae.concepts import concept_vector, stress_scenarios  # noqa: E402
from finvae.datasets import load_sp500_sample, prices_to_returns  # noqa: E402
from finvae.simulation import fit_dynamics  # noqa: E402

TRAIN_END = "2019-12-31"
CRISIS = ("2008-09-01", "2009-03-31")
STRENGTHS = (0, 1, 2, 3)
N_PATHS = 2000


def equal_weight(returns: pd.DataFrame) -> float:
    """Buy-and-hold simple return of the equal-weight portfolio over the rows of log ``returns``."""
    return float((np.exp(returns.sum()) - 1).mean())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("stress_scenarios_out"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    # RRC's stale quotes of the early 1990s are known; the check is meant for new data.
    returns = prices_to_returns(load_sp500_sample(), stale_days=None)
    train = returns.loc[:TRAIN_END]
    model = FinVAE(random_state=args.seed, verbose=0).fit(train)
    print(f"FinVAE fitted on {train.index[0].date()} .. {train.index[-1].date()} "
          f"({len(train)} days x {train.shape[1]} stocks, {len(model.history_)} epochs, window {model.window})")

    crisis_days = (train.index >= CRISIS[0]) & (train.index <= CRISIS[1])
    crisis = concept_vector(model, train, crisis_days, n_boot=200, random_state=args.seed)
    print(f"\nCrisis vector: {CRISIS[0]} .. {CRISIS[1]} against all other dates up to {TRAIN_END}")
    print(crisis)

    at = train.index[-1]
    volatility = model.volatility(train)
    crisis_vol = volatility.loc[crisis_days].mean()
    today = stress_scenarios(model, train, crisis, STRENGTHS, at=at)
    in_crisis_vol = stress_scenarios(model, train, crisis, STRENGTHS, at=at, volatility=crisis_vol)
    print(f"\nScenarios for the {model.window} trading days ending {at.date()}, "
          "equal-weight portfolio, buy and hold over the window:")
    table = pd.DataFrame({
        "vol of 2019-12-31": today.pnl["portfolio"],
        "crisis-average vol": in_crisis_vol.pnl["portfolio"],
        "worst stock (2019 vol)": today.pnl.drop(columns="portfolio").min(axis=1),
    })
    print(table.to_string(float_format=lambda v: f"{v:+.2%}"))
    print(f"(trailing vol of the average stock: {volatility.loc[at].mean():.2%} a day on {at.date()}, "
          f"{crisis_vol.mean():.2%} on average in the crisis)")

    dynamics = fit_dynamics(model, train)
    simulated = stress_scenarios(model, train, crisis, STRENGTHS, at=at, n_paths=N_PATHS, random_state=args.seed,
                                 dynamics=dynamics)
    print(f"\nSimulated scenarios: {N_PATHS} paths of {model.window} days after {at.date()} per strength, codes "
          "moved along the vector; quantiles of the equal-weight portfolio's buy-and-hold return:")
    print(simulated.quantiles.to_string(float_format=lambda v: f"{v:+.1%}"))

    # What happened.
    after = returns.loc[returns.index > at]
    next_window = after.iloc[: model.window]
    portfolio = after.loc[:"2020-03-31"].mean(axis=1)  # daily log return of each stock, averaged: for ranking only
    ends = portfolio.rolling(model.window).sum().loc["2020-03"]
    worst_end = ends.idxmin()
    worst = after.loc[:worst_end].iloc[-model.window:]
    march = after.loc["2020-03"]
    print("\nWhat happened (equal-weight portfolio, buy and hold):")
    print(f"  next {model.window} trading days, {next_window.index[0].date()} .. {next_window.index[-1].date()}: "
          f"{equal_weight(next_window):+.2%}")
    print(f"  worst {model.window} trading days ending in March 2020, {worst.index[0].date()} .. "
          f"{worst.index[-1].date()}: {equal_weight(worst):+.2%}")
    print(f"  March 2020 ({len(march)} trading days): {equal_weight(march):+.2%}")

    # Where the worst window's codes sit along the crisis vector, measured from the 2019 window's codes.
    means, _ = model.encode(returns.loc[:worst_end])
    v = crisis.vector.to_numpy()
    shift = means.loc[worst.index].mean().to_numpy() - means.loc[today.windows["date"].unique()].mean().to_numpy()
    implied = float(shift @ v / (v @ v))
    print(f"  the worst window's mean code lies at strength {implied:+.2f} along the crisis vector "
          "(from the 2019 window's)")
    # Hindsight check of the decoder, not a forecast: the 2019 window pushed as far as March 2020 went.
    hindsight = stress_scenarios(model, train, crisis, [implied], at=at).pnl["portfolio"].iloc[0]
    hindsight_crisis = stress_scenarios(model, train, crisis, [implied], at=at, volatility=crisis_vol)
    print(f"  the 2019 window moved to that strength decodes to {hindsight:+.2%} (2019 vol), "
          f"{hindsight_crisis.pnl['portfolio'].iloc[0]:+.2%} (crisis vol)")

    loss = equal_weight(worst)
    share = (simulated.paths[:, :, -1] <= loss).mean(axis=1)
    print("  share of simulated paths after 2019-12-31 losing at least as much, per strength: "
          + ", ".join(f"{s:g}: {p:.2%}" for s, p in zip(STRENGTHS, share, strict=True)))
    pushed = stress_scenarios(model, train, crisis, [implied], at=at, n_paths=N_PATHS, random_state=args.seed,
                              dynamics=dynamics).quantiles.iloc[0]
    print(f"  simulated with the codes moved to that strength (hindsight): quantiles 1 % {pushed[0.01]:+.1%}, "
          f"5 % {pushed[0.05]:+.1%}, median {pushed[0.5]:+.1%}")
    eve = returns.index[returns.index.get_loc(worst.index[0]) - 1]
    before = model.simulate(returns.loc[:eve], horizon=model.window, n_paths=N_PATHS, random_state=args.seed,
                            dynamics=dynamics)
    pnl = np.expm1(before.sum(axis=1, dtype=np.float64)).mean(axis=1)
    print(f"  simulated from the state on {eve.date()} (the eve of that window; no stress): quantiles 1 % "
          f"{np.quantile(pnl, 0.01):+.1%}, 5 % {np.quantile(pnl, 0.05):+.1%}, median {np.median(pnl):+.1%}; "
          f"{(pnl <= loss).mean():.2%} of paths lose at least {-loss:.1%}")

    worst_scenario = table["crisis-average vol"].min()
    print("\nVerdict: " + (
        f"the scenarios span {table['vol of 2019-12-31'].min():+.1%} .. {table['vol of 2019-12-31'].max():+.1%} in "
        f"2019's volatility and down to {worst_scenario:+.1%} in the crisis's; March 2020's worst "
        f"{model.window} days lost {-equal_weight(worst):.1%}, "
        + ("within" if equal_weight(worst) >= worst_scenario else "beyond")
        + " the worst scenario."
    ))
    if not crisis.significant:
        print("Caution: the crisis vector is not distinguishable from noise (see the baseline above).")

    fig = today.plot()
    fig.savefig(args.out / "scenarios.png", dpi=120)
    plt.close(fig)
    fig = simulated.plot()
    fig.savefig(args.out / "scenarios_simulated.png", dpi=120)
    plt.close(fig)
    today.windows.to_csv(args.out / "scenarios.csv", index=False)

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for strength, path in today.cumulative()["portfolio"].groupby(level="strength"):
        ax.plot(range(1, model.window + 1), path.to_numpy() * 100, label=f"scenario, strength {strength:g}")
    for strength, path in in_crisis_vol.cumulative()["portfolio"].groupby(level="strength"):
        if strength == max(STRENGTHS):
            ax.plot(range(1, model.window + 1), path.to_numpy() * 100, ls="--",
                    label=f"scenario, strength {strength:g}, crisis vol")
    real = (np.exp(worst.cumsum()) - 1).mean(axis=1)
    ax.plot(range(1, model.window + 1), real.to_numpy() * 100, color="k", lw=2,
            label=f"real, {worst.index[0]:%d %b} .. {worst.index[-1]:%d %b %Y}")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel("trading day")
    ax.set_ylabel("equal-weight portfolio, cumulative return (%)")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("Crisis-vector scenarios from end-2019 vs March 2020")
    fig.tight_layout()
    fig.savefig(args.out / "scenarios_vs_2020.png", dpi=120)
    plt.close(fig)
    print(f"\nFigures and scenarios.csv written to {args.out}/")


if __name__ == "__main__":
    main()
