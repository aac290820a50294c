"""The ``finvae`` command line.

::

    finvae data sample --out prices.csv
    finvae data download AAPL MSFT --start 2015-01-01 --out prices.csv
    finvae run                                   # the main job on the bundled sample
    finvae run --tickers AAPL MSFT JPM XOM --out my-run

Each command group has an ``_add_<group>_parser(subparsers)`` function that
declares its arguments and sets ``func`` to a ``_cmd_<name>(args) -> int``
function; :func:`main` only builds the parser and dispatches. To add a
command group (e.g. ``run``), write the pair and call the ``_add_`` function
in :func:`build_parser`.

Data problems (:class:`finvae.DataError`) end the command with a one-line
message on stderr and exit status 2; warnings print as one line each.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

import pandas as pd

from finvae import __version__
from finvae._exceptions import DataError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_DATA_ERROR = 2  # argparse also exits 2 on bad usage: both mean "the input was wrong"


def _write_prices(prices: pd.DataFrame, out: str) -> None:
    """Write prices as CSV (a ``Date`` column, then one per ticker) to ``out``, or stdout for "-"."""
    if out == "-":
        prices.to_csv(sys.stdout)
    else:
        prices.to_csv(out)
    first, last = prices.index[0].date(), prices.index[-1].date()
    where = "stdout" if out == "-" else out
    print(f"Wrote {len(prices):,} dates × {prices.shape[1]} tickers ({first} to {last}) to {where}.",
          file=sys.stderr)


def _number(kind: type, *, least: float | None = None, above: float | None = None, most: float | None = None):
    """An argparse ``type`` that parses ``kind`` and checks its range, so that bad values end in a usage error."""
    checks = [(least, ">=", lambda v, b: v >= b), (above, ">", lambda v, b: v > b), (most, "<=", lambda v, b: v <= b)]
    checks = [(bound, sign, ok) for bound, sign, ok in checks if bound is not None]

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not all(ok(value, bound) for bound, _, ok in checks):
            rule = " and ".join(f"{sign} {bound:g}" for bound, sign, _ in checks)
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    return parse


# --------------------------------------------------------------------------- finvae data ...


def _add_data_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="get price data: the bundled sample or Yahoo Finance downloads",
                                 description="Get price data as CSV.")
    commands = data.add_subparsers(dest="data_command", metavar="{sample,download}", required=True)

    sample = commands.add_parser(
        "sample", help="write the bundled S&P 500 sample (20 stocks, 1990-2022; works offline)",
        description="Write the bundled daily adjusted closes of 20 S&P 500 stocks, 1990-01-02 to 2022-12-28.")
    sample.add_argument("--out", default="-", help="CSV file to write (default: stdout)")
    sample.set_defaults(func=_cmd_data_sample)

    download = commands.add_parser(
        "download", help="download adjusted closes from Yahoo Finance (cached)",
        description="Download adjusted close prices from Yahoo Finance through yfinance. Downloads are cached: "
                    "repeating a request needs no network.")
    download.add_argument("tickers", nargs="+", metavar="TICKER", help="Yahoo Finance symbols, e.g. AAPL MSFT ^GSPC")
    download.add_argument("--start", help="first date, YYYY-MM-DD (default: the first price available)")
    download.add_argument("--end", help="end date, YYYY-MM-DD, exclusive (default: now)")
    download.add_argument("--interval", default="1d", help="bar length: 1d (default), 1wk, 1mo, 1h, ...")
    download.add_argument("--out", default="-", help="CSV file to write (default: stdout)")
    download.add_argument("--refresh", action="store_true", help="download again even if cached")
    download.add_argument("--cache-dir", help="cache folder (default: $FINVAE_CACHE_DIR or the user cache)")
    download.set_defaults(func=_cmd_data_download)


def _cmd_data_sample(args: argparse.Namespace) -> int:
    from finvae.datasets import load_sp500_sample

    _write_prices(load_sp500_sample(), args.out)
    return EXIT_OK


def _cmd_data_download(args: argparse.Namespace) -> int:
    from finvae.datasets import download_prices

    try:
        prices = download_prices(args.tickers, args.start, args.end, interval=args.interval,
                                 cache_dir=args.cache_dir, refresh=args.refresh, progress=True)
    except ValueError as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(str(exc)) from exc  # a bad --interval is a usage error, reported the same way
    _write_prices(prices, args.out)
    return EXIT_OK


# --------------------------------------------------------------------------- finvae run


def _add_run_parser(subparsers: argparse._SubParsersAction) -> None:
    from finvae import _main_job as job  # the job's defaults, stated once

    run = subparsers.add_parser(
        "run", help="the main job: walk-forward FinVAE, risk factors, anomaly-flag backtest, figures",
        description="Walk FinVAE forward (refits on past returns only), write its factors, scores, flags and "
                    "the assets' exposures, backtest de-risking an equal-weight portfolio on the flags beside "
                    "buy & hold and a volatility target, draw the figures, and print the summary table. "
                    "With no data option it runs on the bundled S&P 500 sample (20 stocks, 1990-2022).")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--tickers", nargs="+", metavar="TICKER",
                        help="download these Yahoo Finance symbols (cached) instead of the sample")
    source.add_argument("--prices-csv", metavar="PATH", help="CSV (or parquet) of prices, one column per asset")
    run.add_argument("--start", default="2000-01-01",
                     help="first scored and backtested date; training uses the days before (default: 2000-01-01)")
    run.add_argument("--end", help="last date used, YYYY-MM-DD (default: the last available)")
    run.add_argument("--window", type=_number(int, least=2), default=20,
                     help="days per FinVAE window (default: 20)")
    run.add_argument("--latent-dim", type=_number(int, least=1), default=3,
                     help="number of latent factors (default: 3)")
    run.add_argument("--epochs", type=_number(int, least=1), default=60,
                     help="most training epochs per fit (default: 60)")
    run.add_argument("--refit-every", type=_number(int, least=1), default=126,
                     help="trading days between refits (default: 126, twice a year)")
    run.add_argument("--n-jobs", type=int, default=2, help="refits run in parallel (default: 2)")
    run.add_argument("--seed", type=int, default=0, help="random seed of every fit (default: 0)")
    run.add_argument("--signal", choices=job.SIGNALS, default=job.DEFAULT_SIGNAL,
                     help="flag on the market-wide part of FinVAE's score ('market') or on the whole score "
                          "('score'); default: %(default)s")
    run.add_argument("--vol-halflife", type=_number(float, above=0), default=job.DEFAULT_VOL_HALFLIFE,
                     help="half-life in days of the volatility the walk-forward models measure surprise against "
                          "(default: %(default)g)")
    run.add_argument("--hold", type=_number(int, least=1), default=job.DEFAULT_HOLD,
                     help="days de-risked after each flag (default: %(default)s)")
    run.add_argument("--exposure-when-flagged", type=_number(float, least=0, most=1),
                     default=job.DEFAULT_EXPOSURE_WHEN_FLAGGED,
                     help="portfolio exposure while de-risked, 0 = all cash (default: %(default)g)")
    run.add_argument("--out", default="finvae-output", help="output folder (default: finvae-output)")
    run.add_argument("--no-figures", action="store_true", help="write the CSV files only")
    run.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the refits on a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                          '(needs pip install "finvae[dask]"; --n-jobs is then the cluster\'s)')
    run.add_argument("--checkpoint", metavar="DIR",
                     help="save each finished refit in DIR, and resume from it: a re-run with the same DIR "
                          "and settings skips the refits already done")
    run.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from finvae._main_job import format_summary, run_main_job
    from finvae.datasets import download_prices, load_returns, load_sp500_sample, prices_to_returns

    if args.tickers:
        # Training needs the history before --start: download everything up to --end.
        returns = prices_to_returns(download_prices(args.tickers, None, args.end, progress=not args.quiet))
    elif args.prices_csv:
        returns = load_returns(args.prices_csv, assume="prices")
    else:
        # RRC's early stale quotes are known and documented in load_sp500_sample: no warning on every run.
        returns = prices_to_returns(load_sp500_sample(), stale_days=None)
    if args.end is not None:
        returns = returns.loc[: pd.Timestamp(args.end)]
    result = run_main_job(returns, out_dir=args.out, start=args.start, window=args.window,
                          latent_dim=args.latent_dim, epochs=args.epochs, refit_every=args.refit_every,
                          n_jobs=args.n_jobs, random_state=args.seed, signal=args.signal,
                          vol_halflife=args.vol_halflife, hold=args.hold,
                          exposure_when_flagged=args.exposure_when_flagged, figures=not args.no_figures,
                          verbose=0 if args.quiet else 1, scheduler=args.scheduler, checkpoint_dir=args.checkpoint)
    print(format_summary(result.summary))
    print(f"\nFiles in {args.out}/: {', '.join(path.name for path in result.files)} ({result.seconds:.0f} s)")
    return EXIT_OK


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The ``finvae`` argument parser with all its command groups."""
    parser = argparse.ArgumentParser(
        prog="finvae", description="Variational autoencoders for financial time series.")
    parser.add_argument("--version", action="version", version=f"finvae {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_data_parser(subparsers)
    _add_run_parser(subparsers)
    return parser


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning, without the source file and line: they mean nothing to a CLI user.
    print(f"finvae: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``finvae`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name. Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 on a data error (a one-line message on stderr) or bad usage.

    Examples
    --------
    >>> from finvae.cli import main
    >>> main(["data", "sample", "--out", "prices.csv"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():  # restores the global warning display on the way out
        warnings.showwarning = _print_warning
        try:
            return args.func(args)
        except DataError as exc:
            print(f"finvae: error: {exc}", file=sys.stderr)
            return EXIT_DATA_ERROR


if __name__ == "__main__":
    sys.exit(main())
