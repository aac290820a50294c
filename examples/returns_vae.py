"""FinVAE on the bundled S&P 500 sample: fit on 1990-2012, then read its factors and anomaly scores.

Run ``python examples/returns_vae.py [--out returns-vae-output]``. It fits one
FinVAE on the daily log returns of 20 stocks up to 2012, scores every day from
1990 to 2022 (2013 on is out of sample), and writes to ``--out``:

- ``factors.png``: the latent factors (posterior means) over time;
- ``scores.png``: the anomaly score with its threshold and the flagged dates,
  under the equal-weight index of the 20 stocks;
- ``asset_contributions.png``: each stock's share of the residual on the ten
  most anomalous out-of-sample days (one stock = a single-stock event, an even
  split = a market-wide one).

It prints the threshold, the share of days flagged in and out of sample, and the
ten most anomalous out-of-sample days with the stock that contributed most.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed

import matplotlib.pyplot as plt  # noqa: E402

from finvae import FinVAE  # noqa: E402
from finvae.datasets import load_sp500_sample, prices_to_returns  # noqa: E402
from finvae.plotting import (  # noqa: E402
    equal_weight_index,
    plot_asset_contributions,
    plot_factors,
    plot_scores,
)

TRAIN_END = "2012-12-31"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="returns-vae-output", help="folder for the figures")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    returns = prices_to_returns(load_sp500_sample(), stale_days=None)  # RRC's early stale quotes are known
    model = FinVAE(random_state=args.seed, verbose=0).fit(returns.loc[:TRAIN_END])

    factors = model.transform(returns)
    scores = model.score(returns)
    flags = model.predict(returns)
    shares = model.score_assets(returns)
    test = returns.index > TRAIN_END

    figures = {
        "factors.png": plot_factors(factors, title=f"FinVAE latent factors over time (fitted to {TRAIN_END[:4]})"),
        "scores.png": plot_scores(scores, model.threshold_, flags, equal_weight_index(returns),
                                  title=f"FinVAE anomaly score, threshold and flagged dates (fitted to "
                                        f"{TRAIN_END[:4]}) over the equal-weight index"),
        "asset_contributions.png": plot_asset_contributions(
            shares[test], scores[test], top=10,
            title=f"Per-asset contributions on the 10 most anomalous days after {TRAIN_END[:4]} (out of sample)"),
    }
    for name, fig in figures.items():
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    print(f"threshold_ = {model.threshold_:.2f}; days flagged: {flags[~test].mean():.1%} up to {TRAIN_END[:4]}, "
          f"{flags[test].mean():.1%} after")
    top = scores[test].nlargest(10)
    print("Most anomalous days after the training period (score, stock with the largest share):")
    for day, score in top.items():
        leader = shares.loc[day].idxmax()
        print(f"  {day:%Y-%m-%d}  {score:5.1f}  {leader} ({shares.loc[day, leader]:.0%})")
    print(f"Figures in {out}/: {', '.join(figures)}")


if __name__ == "__main__":
    main()
