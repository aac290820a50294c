"""The ``finvae`` command line.

::

    finvae data sample --out prices.csv
    finvae data download AAPL MSFT --start 2015-01-01 --out prices.csv
    finvae fit prices.csv --model my-model --end 2019-12-31   # fit once, save the model
    finvae score prices.csv --model my-model --out scores.csv # score every date, each evening
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
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from finvae import __version__
from finvae._exceptions import DataError

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_DATA_ERROR = 2  # argparse also exits 2 on bad usage: both mean "the input was wrong"
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def _write_prices(prices: pd.DataFrame, out: str) -> None:
    """Write prices as CSV (a ``Date`` column, then one per ticker) to ``out``, or stdout for "-"."""
    if out == "-":
        prices.to_csv(sys.stdout)
    else:
        from finvae._atomic import write_csv

        try:
            write_csv(prices, out)
        except OSError as exc:
            raise DataError(f"Could not write {out}: {exc.strerror or exc}.") from None
    first, last = prices.index[0].date(), prices.index[-1].date()
    where = "stdout" if out == "-" else out
    print(f"Wrote {len(prices):,} dates × {prices.shape[1]} tickers ({first} to {last}) to {where}.",
          file=sys.stderr)


def _folder_name(text: str) -> str:
    """An argparse ``type`` for an output folder: a name, not an empty string."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder name, got an empty one ('.' is the current folder)")
    return text


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
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if not all(ok(value, bound) for bound, _, ok in checks):
            rule = " and ".join(f"{sign} {bound:g}" if isinstance(bound, float) else f"{sign} {bound}"
                                for bound, sign, _ in checks)
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


# --------------------------------------------------------------------------- finvae fit / finvae score


def _date(text: str, *, end: bool = False) -> pd.Timestamp:
    """An argparse ``type`` for dates, so that a bad date ends in a usage error.

    Read as a file's dates are: dotted dates day first (31.01.2024), slashed ones month first only when that
    is the one reading (01/31/2024; 03/04/2024 is refused as ambiguous). A year or a month alone is the whole
    period: its first day for ``--start``, its last for ``--end`` (``--end 2019`` includes December 2019).
    """
    text = text.strip()
    example = "expected a date such as 2024-01-31 (or 31.01.2024, 01/31/2024, 2024-01, 2024)"
    if re.fullmatch(r"\d{4}(-\d{1,2})?", text):  # a year, or a year and month: the whole period
        try:
            period = pd.Period(text, freq="M" if "-" in text else "Y")
        except ValueError:
            raise argparse.ArgumentTypeError(f"{example}, got {text!r}") from None
        return (period.end_time if end else period.start_time).normalize()
    dotted = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{4})", text)
    slashed = re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text)
    if not (dotted or slashed or re.fullmatch(r"\d{4}([-/.])\d{1,2}\1\d{1,2}([ T].*)?|\d{8}", text)):
        # "Dec 2019" would be read as its first day, "3/4/24" month first: other forms are refused
        raise argparse.ArgumentTypeError(f"{example}, got {text!r}")
    if slashed and int(slashed[1]) <= 12 and int(slashed[2]) <= 12 and slashed[1] != slashed[2]:
        raise argparse.ArgumentTypeError(f"{text!r} is ambiguous (day/month or month/day?): write it as YYYY-MM-DD")
    try:
        value = pd.Timestamp(pd.to_datetime(text, dayfirst=bool(dotted or (slashed and int(slashed[1]) > 12))))
    except (ValueError, TypeError, OverflowError):
        raise argparse.ArgumentTypeError(f"{example}, got {text!r}") from None
    if pd.isna(value):  # '' (an unset variable in a cron line) reads as NaT
        raise argparse.ArgumentTypeError(f"{example}, got {text!r}")
    if value.tzinfo is not None:
        raise argparse.ArgumentTypeError(f"give a date without a time zone, such as 2024-01-31; got {text!r} (a "
                                         "date is read in the file's own zone)")
    return value


def _end_date(text: str) -> pd.Timestamp:
    """:func:`_date` for ``--end``: a year or month alone ends on its last day."""
    return _date(text, end=True)


def _add_input_arguments(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("prices", metavar="PRICES",
                        help="CSV or parquet file, one row per date and one column per asset, of prices or returns "
                             "(a 'Date' column or the first column holds the dates)")
    parser.add_argument("--model", required=True, type=_folder_name, metavar="DIR", help=what)
    parser.add_argument("--assume", choices=("auto", "prices", "returns"), default="auto",
                        help="what PRICES holds (default: decided from the numbers, and said in one line)")
    parser.add_argument("--returns-kind", choices=("log", "simple"), default="log",
                        help="with --assume returns: the file's returns are log (default) or simple ones (1 %% = "
                             "0.01), turned into log returns; give a model's fit and score the same")


def _add_fit_parser(subparsers: argparse._SubParsersAction) -> None:
    from finvae import FinVAE

    defaults = FinVAE()
    fit = subparsers.add_parser(
        "fit", help="fit FinVAE on a file of prices or returns and save the model",
        description="Fit FinVAE on the dates of PRICES between --start and --end, and save the model to the folder "
                    "--model (finvae.json and model.safetensors; a model already there is replaced). "
                    "Then score each new day with `finvae score`.")
    _add_input_arguments(fit, "folder to save the model in (created if missing)")
    fit.add_argument("--start", type=_date, metavar="DATE",
                     help="first date fitted on, YYYY-MM-DD (default: the first in PRICES)")
    fit.add_argument("--end", type=_end_date, metavar="DATE",
                     help="last date fitted on, inclusive; a year or month alone means its last day "
                          "(default: the last in PRICES)")
    fit.add_argument("--window", type=_number(int, least=2), default=defaults.window, metavar="N",
                     help="days per FinVAE window (default: %(default)s)")
    fit.add_argument("--latent-dim", type=_number(int, least=1), default=defaults.latent_dim, metavar="K",
                     help="number of latent factors (default: %(default)s)")
    fit.add_argument("--epochs", type=_number(int, least=1), default=defaults.epochs, metavar="N",
                     help="most training epochs (default: %(default)s)")
    fit.add_argument("--seed", type=_number(int, least=0, most=2**32 - 1), default=0, metavar="S",
                     help="random seed: the same file, dates and seed give the same model (default: 0)")
    fit.add_argument("--quiet", action="store_true", help="no training progress bar")
    fit.set_defaults(func=_cmd_fit)


def _add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    score = subparsers.add_parser(
        "score", help="score each date with a saved model: score, its parts, threshold, flag, top assets",
        description="Score each date of PRICES with the model that `finvae fit` saved in --model, and write one "
                    "row per date to --out: the anomaly score, each of its parts, the threshold, the flag "
                    "(score > threshold) and the assets that contributed most (their shares of the day's "
                    "squared residual). Pass the whole history, not the last days only: each score uses the "
                    "trailing volatility of the days before it.")
    _add_input_arguments(score, "the folder that `finvae fit` (or FinVAE.save) wrote")
    score.add_argument("--out", required=True, metavar="CSV", help="CSV file to write ('-' for stdout)")
    score.add_argument("--start", type=_date, metavar="DATE",
                       help="first date written (default: the first); the dates before still feed the scores")
    score.add_argument("--end", type=_end_date, metavar="DATE",
                       help="last date scored, inclusive; a year or month alone means its last day "
                            "(default: the last in PRICES)")
    score.add_argument("--top", type=_number(int, least=1), default=3, metavar="N",
                       help="assets listed per date in the top_assets column (default: %(default)s)")
    score.set_defaults(func=_cmd_score)


def _check_returns_kind(args: argparse.Namespace, path_option: str) -> None:
    if args.returns_kind == "simple" and args.assume != "returns":
        raise DataError(f"--returns-kind simple says what a file of returns holds: use it with {path_option} and "
                        "--assume returns (prices are turned into log returns).")


def _read_returns(path: str, assume: str, returns_kind: str = "log") -> pd.DataFrame:
    """Log returns from a file of prices or returns (``load_returns``), with its note on which it assumed.

    Besides ``load_returns``'s checks: a file whose numbers move like price
    levels but with zero or negative values (a bad tick, a column of
    something else) is refused, rather than used as returns. Simple returns
    (``returns_kind="simple"``) are turned into log returns, which the model
    and the backtest read.
    """
    returns = _read_file_returns(path, assume)
    if returns_kind == "simple":
        import numpy as np

        lost = returns.le(-1).stack()
        if lost.any():
            date, asset = lost[lost].index[0]
            raise DataError(f"{path} holds simple returns of -100 % or less, the first {asset} on {date.date()} "
                            f"({returns.at[date, asset]:g}); a simple return is above -1 (a total loss). In "
                            "percent? Divide them by 100.")
        returns = np.log1p(returns)
    return returns


def _read_file_returns(path: str, assume: str) -> pd.DataFrame:
    """:func:`_read_returns` before any conversion of simple returns."""
    from finvae.datasets import load_returns
    from finvae.datasets._market import PRICE_STEP, median_step

    _check_input_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            returns = load_returns(path, assume=assume)
        except DataError as exc:
            raise DataError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if assume == "auto" and (returns.to_numpy() <= 0).any():
        step = median_step(returns)
        if step < PRICE_STEP:  # persistent levels: prices, with some not positive
            try:
                load_returns(path, assume="prices")
            except DataError as exc:
                raise DataError(f"{path} looks like prices (its values move {step:.1%} a day) that are "
                                f"not all positive: {exc} (--assume returns reads the file as returns.)") from None
    for warning in caught:  # shown again, through the command line's one-line display
        warnings.showwarning(str(warning.message), warning.category, warning.filename, warning.lineno)
    if returns.empty:
        raise DataError(f"{path} holds no returns ({len(returns)} dates × {returns.shape[1]} assets).")
    return returns


def _check_input_file(path: str) -> None:
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file" + (" (it is a folder)" if Path(path).is_dir() else "")
                        + ". Pass a CSV or parquet file of prices, e.g. from `finvae data sample --out prices.csv`.")


#: Advice in finvae's messages that names a Python call, and what to do on the command line instead.
_COMMAND_LINE_ADVICE = {  # in order: a longer phrase before the shorter ones inside it
    "replace such values with NaN, e.g. prices.mask(prices <= 0), and pass assume='prices'.":
        "empty those cells in the file (they are treated as gaps), and pass --assume prices.",
    "assume='prices'": "--assume prices",
    "assume='returns'": "--assume returns",
    "Convert prices first, e.g. finvae.datasets.prices_to_returns(prices).":
        "Pass --assume prices (or leave --assume out: it tells prices from returns).",
    "If these are returns, not prices, use them directly.": "If these are returns, not prices, pass --assume returns.",
    "; check the source, or pass stale_days=None to turn this check off.":
        "; check the source (a warning only: the file is used as it is).",
    "finvae.datasets.load_sp500_sample() (20 S&P 500 stocks, 1990-2022, no network needed)":
        "the bundled sample (finvae data sample --out prices.csv; 20 S&P 500 stocks, 1990-2022)",
    "replace such values with NaN, e.g. prices.mask(prices <= 0), and they are treated as gaps.":
        "empty those cells in the file, and they are treated as gaps.",
    "Keep one row per date, e.g. data[~data.index.duplicated(keep='last')].":
        "Keep one row per date in the file (a day appended twice?).",
    "Sort them with data.sort_index().": "Sort the file's rows by date, oldest first.",
    "is not an asset: drop it.": "is not an asset: delete it from the file.",
    "is a gap: convert with pd.to_numeric(..., errors='coerce') to turn it into NaN.":
        "is a gap: empty those cells in the file.",
}


def _for_the_command_line(message: str) -> str:
    """``message`` with its Python advice replaced by the options that do the same."""
    for python, option in _COMMAND_LINE_ADVICE.items():
        message = message.replace(python, option)
    return message


def _n_jobs(text: str) -> int:
    """An argparse ``type`` for joblib's n_jobs: a positive number of processes, or -1 for one per core."""
    value = _number(int)(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be a number of processes >= 1, or -1 for one per core; got {text}")
    return value


def _day_bounds(index: pd.DatetimeIndex, start, end) -> tuple:
    """``--start``/``--end`` in ``index``'s zone, both inclusive: a plain date covers its whole day."""
    from finvae._validation import as_date_of

    start = as_date_of(index, start, "--start") if start is not None else None
    if end is not None:
        end = as_date_of(index, end, "--end")
        if end == end.normalize():  # a date without a time: up to that day's last instant (16:00 closes)
            end = end + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")
    return start, end


def _check_date_order(start, end) -> None:
    if start is not None and end is not None and start > end:
        raise DataError(f"--start {start.date()} is after --end {end.date()}: nothing lies between them.")


def _between(returns: pd.DataFrame, start, end, path: str) -> pd.DataFrame:
    _check_date_order(start, end)
    start, end = _day_bounds(returns.index, start, end)
    chosen = returns.loc[start:end]
    if chosen.empty:
        raise DataError(f"{path} has no dates between {start.date() if start is not None else 'its start'} and "
                        f"{end.date() if end is not None else 'its end'} (it covers {returns.index[0].date()} to "
                        f"{returns.index[-1].date()}). Pass other --start/--end dates.")
    return chosen


def _halflives(days: list[float] | None) -> float | tuple[float, ...] | None:
    """``--vol-halflife``'s values as FinVAE's ``vol_halflife``: None, one number, or a (fast, slow) pair."""
    if days is None:
        return None
    if len(days) > 2:
        raise DataError(f"--vol-halflife takes one number of days or two (fast slow); got {len(days)}: "
                        f"{' '.join(f'{d:g}' for d in days)}.")
    return days[0] if len(days) == 1 else tuple(days)


def _dates(index: pd.Index) -> str:
    return f"{len(index):,} dates, {index[0].date()} to {index[-1].date()}"


#: Written by ``finvae fit`` beside the model's files: what it was fitted on (``finvae score`` reports it).
FIT_INFO = "fit.json"


def _check_model_target(folder: Path) -> None:
    """DataError unless ``folder`` is missing, empty, or a model folder (which a new fit may replace)."""
    from finvae._persistence import MODEL_FILES

    blocking = next((parent for parent in folder.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise DataError(f"{blocking} is a file, so no model folder can be made under it; pass another --model.")
    def ours(name: str) -> bool:  # the model's files, a killed save's temporary ones (_atomic), an OS's clutter
        return name in {*MODEL_FILES, FIT_INFO, ".DS_Store", "Thumbs.db"} or (
            name.startswith(tuple(f".{n}." for n in MODEL_FILES + (FIT_INFO,))) and ".tmp" in name)

    if folder.exists() and not (folder.is_dir() and ((folder / MODEL_FILES[0]).is_file()
                                                     or all(ours(p.name) for p in folder.iterdir()))):
        raise DataError(f"{folder} exists and is not a finvae model folder; it is left as it is. "
                        "Pass a new folder (or an old model's folder, to replace that model) to --model.")
    others = sorted(p.name for p in folder.iterdir() if not ours(p.name)) if folder.is_dir() else []
    if others:  # a new fit replaces the folder as a whole: it would delete them
        raise DataError(f"{folder} holds other files besides its model ({', '.join(others[:3])}"
                        f"{' ...' if len(others) > 3 else ''}), which replacing the model would delete. Move them "
                        "out, or pass another --model.")


def _save_model(model, folder: Path, info: dict) -> None:
    """Save to a new folder beside ``folder``, then swap it in: a crash never leaves half a model there."""
    import json

    from finvae._atomic import atomic_folder
    from finvae._persistence import MODEL_FILES

    _check_model_target(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(folder) as staging:
            model.save(staging)
            # Tied to these tensors: a model saved over them later (FinVAE.save) does not inherit these dates.
            info = dict(info, tensors_sha256=json.loads((staging / MODEL_FILES[0]).read_text())["tensors_sha256"])
            (staging / FIT_INFO).write_text(json.dumps(info, indent=1))
    except OSError as exc:
        raise DataError(f"Could not save the model to {folder}: {exc.strerror or exc}.") from None


def _write_csv_atomically(table: pd.DataFrame, out: str) -> None:
    """Write ``table`` to a temporary file beside ``out``, then rename it: readers never see half a file."""
    if out == "-":
        table.to_csv(sys.stdout, index_label="Date", float_format="%.6g")
        return
    from finvae._atomic import write_csv

    try:
        write_csv(table, out, index_label="Date", float_format="%.6g")
    except OSError as exc:
        raise DataError(f"Could not write {out}: {exc.strerror or exc}.") from None


def _top_assets(shares: pd.DataFrame, top: int) -> pd.Series:
    """Per date, the ``top`` assets by share as "AAPL 0.62; MSFT 0.20; ..." ("" where there is no share)."""
    import numpy as np

    values = shares.to_numpy()
    names = np.asarray([str(c) for c in shares.columns])
    order = np.argsort(-np.nan_to_num(values, nan=-1.0), axis=1, kind="stable")[:, :top]
    texts = []
    for row, picks in zip(values, order, strict=True):
        picks = [i for i in picks if np.isfinite(row[i]) and row[i] > 0]
        texts.append("; ".join(f"{names[i]} {row[i]:.2f}" for i in picks))
    return pd.Series(texts, index=shares.index, name="top_assets")


def _fit_info(folder: Path) -> dict | None:
    """What ``finvae fit`` wrote about the model in ``folder`` (its ``fit.json``), or None if unknown."""
    import json

    from finvae._persistence import MODEL_FILES

    try:
        info = json.loads((folder / FIT_INFO).read_text())
        saved = json.loads((folder / MODEL_FILES[0]).read_text())
    except (OSError, ValueError, TypeError):
        return None  # a model saved by FinVAE.save, or an unreadable note: the scores do not depend on it
    if not isinstance(info, dict) or info.get("tensors_sha256", saved.get("tensors_sha256")) != saved.get(
            "tensors_sha256"):
        return None  # another model was saved here since (FinVAE.save): this note is not about it
    return info


def _fit_span(folder: Path) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The first and last dates ``finvae fit`` fitted the model on (its ``fit.json``), or None if unknown."""
    info = _fit_info(folder)
    try:
        return None if info is None else (pd.Timestamp(info["start"]), pd.Timestamp(info["end"]))
    except (KeyError, ValueError, TypeError):
        return None


def _days(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The local day of each date (fit.json holds days; an index may hold times and a zone)."""
    return (index.tz_localize(None) if index.tz is not None else index).normalize()


def _in_span(index: pd.DatetimeIndex, span: tuple[pd.Timestamp, pd.Timestamp]):
    """Whether each date's day lies in ``span`` (a bool array)."""
    days = _days(index)
    return (days >= span[0].normalize()) & (days <= span[1].normalize())


def _cmd_fit(args: argparse.Namespace) -> int:
    from finvae import FinVAE

    _check_model_target(Path(args.model))  # before the fit, not after it
    _check_returns_kind(args, "PRICES")
    returns = _between(_read_returns(args.prices, args.assume, args.returns_kind), args.start, args.end,
                       args.prices)
    model = FinVAE(window=args.window, latent_dim=args.latent_dim, epochs=args.epochs, random_state=args.seed,
                   verbose=0 if args.quiet else 1)
    try:
        model.fit(returns)
    except DataError as exc:
        raise DataError(f"{args.prices} ({_dates(returns.index)}): {exc}") from None
    folder = Path(args.model)
    info = {"prices": str(args.prices), "assume": args.assume, "returns_kind": args.returns_kind,
            "start": str(returns.index[0].date()),
            "end": str(returns.index[-1].date()), "n_dates": len(returns), "finvae": __version__}
    _save_model(model, folder, info)
    history = model.history_
    print(f"Fitted FinVAE on {args.prices}: {_dates(returns.index)} × {returns.shape[1]} assets; "
          f"window {args.window}, {args.latent_dim} factors, seed {args.seed}.")
    print(f"Trained {len(history)} of {args.epochs} epochs (kept epoch {history.attrs.get('best_epoch', len(history))}"
          f"). Threshold {model.threshold_:.3f}: {model.contamination:.0%} of the training dates score above it.")
    print(f"Saved the model to {folder}/. Score with: finvae score PRICES --model {folder} --out scores.csv")
    return EXIT_OK


def _cmd_score(args: argparse.Namespace) -> int:
    from finvae import FinVAE

    _check_date_order(args.start, args.end)  # before any work: --start applies to the scores, after the scoring
    if args.out != "-" and Path(args.out).resolve() == Path(args.prices).resolve():
        raise DataError(f"--out {args.out} is the price file itself; the scores would overwrite it. Pass another "
                        "file to --out.")
    _check_returns_kind(args, "PRICES")
    fitted_kind = (_fit_info(Path(args.model)) or {}).get("returns_kind")  # None: not recorded (older or Python)
    if fitted_kind is not None and fitted_kind != args.returns_kind:
        # --returns-kind says what a file holds, so another file may rightly differ: a warning, not an error
        warnings.warn(f"finvae fit read the file of the model in {args.model} as {fitted_kind} returns "
                      f"(--returns-kind {fitted_kind}); {args.prices} is read as {args.returns_kind} ones. If it "
                      f"holds {fitted_kind} returns too, pass --returns-kind {fitted_kind} (and --assume returns).",
                      UserWarning, stacklevel=2)
    model = FinVAE.load(args.model)
    returns = _between(_read_returns(args.prices, args.assume, args.returns_kind), None, args.end, args.prices)
    fitted = [str(name) for name in getattr(model, "asset_names_", getattr(model, "feature_names_in_", []))]
    columns = [str(name) for name in returns.columns]
    if fitted and columns != fitted:
        if sorted(columns) != sorted(fitted):
            missing = [c for c in fitted if c not in set(columns)]
            extra = [c for c in columns if c not in set(fitted)]
            detail = "; ".join(([f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else "")]
                                if missing else [])
                               + ([f"not at fit {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else "")]
                                  if extra else []))
            raise DataError(f"{args.prices} has other assets than the model in {args.model} was fitted on ({detail}). "
                            f"Score a file with the same {len(fitted)} columns, or refit: finvae fit {args.prices} "
                            f"--model {args.model}.")
        returns = returns.set_axis(columns, axis=1)[fitted]  # the same assets in another order
    elif not fitted and returns.shape[1] != model.n_features_in_:
        raise DataError(f"{args.prices} has {returns.shape[1]} assets; the model in {args.model} was fitted on "
                        f"{model.n_features_in_}.")
    try:
        score = model.score(returns)
        parts = model.score_parts(returns)
        shares = model.score_assets(returns)
    except DataError as exc:
        raise DataError(f"{args.prices} ({_dates(returns.index)}): {exc}") from None
    table = pd.concat([score.rename("score"), parts], axis=1)
    table["threshold"] = model.threshold_
    table["flag"] = score.gt(model.threshold_)  # predict's rule; False where there is no score
    table["top_assets"] = _top_assets(shares, args.top)
    span = _fit_span(Path(args.model))
    if span is not None:
        table["in_sample"] = _in_span(table.index, span)  # dates the model was fitted on: ~1 % flagged by design
    table = _between(table, args.start, None, args.prices)
    scored = table.dropna(subset=["score"])
    if scored.empty:
        raise DataError(
            f"{args.prices} is too short to score: no date from {table.index[0].date()} on has a full window of "
            f"{model.window} days ({_dates(returns.index)}). Pass the whole history, not only the last days."
        )
    _write_csv_atomically(table, args.out)
    flagged = scored.index[scored["flag"]]
    report = sys.stderr if args.out == "-" else sys.stdout
    print(f"Scored {_dates(scored.index)} with the model in {args.model}: {len(flagged)} flagged "
          f"(score > threshold {model.threshold_:.3f}).", file=report)
    if table.index[-1] != scored.index[-1]:  # tonight's row has no score: say so, not only the day before
        observed = int(returns.loc[table.index[-1]].notna().sum())
        print(f"Last date, {table.index[-1].date()}: no score ({observed} of {returns.shape[1]} assets have a "
              f"return; a score needs {model.min_coverage:.0%} of them).", file=report)
    last = scored.iloc[-1]
    part_text = ", ".join(f"{name} {last[name]:.2f}" for name in parts.columns)
    print(f"Latest, {scored.index[-1].date()}: score {last['score']:.2f} ({part_text}), "
          f"{'FLAGGED' if last['flag'] else 'not flagged'}; top assets: {last['top_assets'] or 'none'}.", file=report)
    if span is not None:
        days = _days(scored.index)
        after, before = int((days > span[1].normalize()).sum()), int((days < span[0].normalize()).sum())
        print(f"The model was fitted on dates up to {span[1].date()}: {after:,} of the scored dates are after it "
              "(out of sample)" + (f"; {before:,} are before its first date, {span[0].date()}, and out of sample "
                                   "too" if before else "") + ".", file=report)
    if len(flagged):
        recent = ", ".join(str(date.date()) for date in flagged[-5:])
        print(f"Flagged dates{' (the last 5)' if len(flagged) > 5 else ''}: {recent}.", file=report)
    if args.out != "-":
        print(f"Wrote {args.out} (columns: Date, {', '.join(table.columns)}).", file=report)
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
    run.add_argument("--assume", choices=("auto", "prices", "returns"), default="auto",
                     help="what --prices-csv holds: 'auto' tells prices from returns (default: auto); returns are "
                          "read as daily log returns unless --returns-kind simple")
    run.add_argument("--returns-kind", choices=("log", "simple"), default="log",
                     help="with --assume returns: the file's returns are log (default) or simple ones (1 %% = "
                          "0.01); simple ones are turned into log returns for the model and the backtest")
    run.add_argument("--start", type=_date, metavar="DATE",
                     help="first scored and backtested date; training uses the days before (default: 2000-01-01, "
                          "or on a shorter history the first date with --min-train days before it)")
    run.add_argument("--end", type=_end_date, metavar="DATE",
                     help="last date used, YYYY-MM-DD, inclusive; a year or month alone means its last day "
                          "(default: the last available)")
    run.add_argument("--window", type=_number(int, least=2), default=20,
                     help="days per FinVAE window (default: 20)")
    run.add_argument("--latent-dim", type=_number(int, least=1), default=3,
                     help="number of latent factors (default: 3)")
    run.add_argument("--epochs", type=_number(int, least=1), default=60,
                     help="most training epochs per fit (default: 60)")
    run.add_argument("--min-train", type=_number(int, least=2), default=756,
                     help="days of training before the first scored date, at least (default: 756, three years)")
    run.add_argument("--refit-every", type=_number(int, least=1), default=126,
                     help="trading days between refits (default: 126, twice a year)")
    run.add_argument("--n-jobs", type=_n_jobs, default=2, help="refits run in parallel; -1: one per core (default: 2)")
    run.add_argument("--seed", type=_number(int, least=0, most=2**32 - 1), default=0,
                     help="random seed of every fit, 0 to 4294967295 (default: 0)")
    run.add_argument("--signal", choices=job.SIGNALS, default=job.DEFAULT_SIGNAL,
                     help="flag on FinVAE's anomaly score, as predict does ('score'), or on its market part "
                          "only ('market'); default: %(default)s")
    run.add_argument("--vol-halflife", type=_number(float, above=0), nargs="+", metavar="DAYS",
                     help="half-life in days of the volatility the walk-forward models measure surprise against: "
                          "one number, or two (fast slow) for the larger of two EWMAs (default: FinVAE's 5 60)")
    run.add_argument("--hold", type=_number(int, least=1), default=job.DEFAULT_HOLD,
                     help="days de-risked after each flag (default: %(default)s)")
    run.add_argument("--exposure-when-flagged", type=_number(float, least=0, most=1),
                     default=job.DEFAULT_EXPOSURE_WHEN_FLAGGED,
                     help="portfolio exposure while de-risked, 0 = all cash (default: %(default)g)")
    run.add_argument("--cost-bps", type=_number(float, least=0), default=job.DEFAULT_COST_BPS,
                     help="trading costs in basis points of each change of exposure (default: %(default)g)")
    run.add_argument("--out", type=_folder_name, default="finvae-output",
                     help="output folder (default: finvae-output)")
    run.add_argument("--no-figures", action="store_true", help="no PNG figures: the CSV files and report.html only")
    run.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    run.add_argument("--scheduler", metavar="ADDRESS",
                     help="run the refits on a running Dask scheduler, e.g. tcp://10.0.0.5:8786 "
                          '(needs pip install "finvae[dask]"; --n-jobs is then the cluster\'s)')
    run.add_argument("--checkpoint", type=_folder_name, metavar="DIR",
                     help="save the reference model and each finished refit in DIR, and resume from it: a "
                          "re-run with the same DIR and settings loads them instead of fitting them again")
    run.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # figures to files only: no window, and no display needed
    from finvae._main_job import format_summary, run_main_job
    from finvae.datasets import download_prices, load_sp500_sample, prices_to_returns

    _check_date_order(args.start, args.end)
    if args.returns_kind == "simple" and not args.prices_csv:
        raise DataError("--returns-kind simple says what a file of returns holds: use it with --prices-csv and "
                        "--assume returns (prices, and downloads, are turned into log returns).")
    _check_returns_kind(args, "--prices-csv")
    if args.tickers:
        # Training needs the history before --start: download everything up to --end.
        end = None if args.end is None else str((args.end + pd.Timedelta(days=1)).date())  # Yahoo's end: exclusive
        returns = prices_to_returns(download_prices(args.tickers, None, end, progress=not args.quiet))
        source = f"Yahoo Finance (yfinance) adjusted closes of {' '.join(args.tickers)}, as log returns"
    elif args.prices_csv:
        source = f"{args.prices_csv} (--assume {args.assume}" + (
            f", --returns-kind {args.returns_kind})" if args.assume == "returns" else ")")
        returns = _read_returns(args.prices_csv, args.assume, args.returns_kind)
    else:
        # RRC's early stale quotes are known and documented in load_sp500_sample: no warning on every run.
        returns = prices_to_returns(load_sp500_sample(), stale_days=None)
        source = "the bundled sample, load_sp500_sample(): 20 S&P 500 stocks' adjusted closes, as log returns"
    if args.end is not None:
        returns = _between(returns, None, args.end, args.prices_csv or "the data")
        source += f"; up to --end {args.end.date() if args.end == args.end.normalize() else args.end}"
    if args.scheduler:  # a lost scheduler ends in finvae's one line, not in dask's logged tracebacks before it
        import logging

        from finvae._cluster import import_distributed

        import_distributed()  # dask sets its loggers' levels when imported: quieten them after that
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
    start = args.start
    if start is None:  # not given: 2000-01-01, or as early as --min-train allows on a shorter history
        start = pd.Timestamp("2000-01-01")
        if int(returns.index.searchsorted(start)) < args.min_train:
            start = None
    result = run_main_job(returns, out_dir=args.out, start=None if start is None else str(start.date()),
                          window=args.window,
                          latent_dim=args.latent_dim, epochs=args.epochs, refit_every=args.refit_every,
                          min_train=args.min_train,
                          n_jobs=args.n_jobs, random_state=args.seed, signal=args.signal,
                          vol_halflife=_halflives(args.vol_halflife), hold=args.hold,
                          exposure_when_flagged=args.exposure_when_flagged, cost_bps=args.cost_bps,
                          figures=not args.no_figures,
                          verbose=0 if args.quiet else 1, scheduler=args.scheduler, checkpoint_dir=args.checkpoint,
                          source=source)
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
    _add_fit_parser(subparsers)
    _add_score_parser(subparsers)
    _add_run_parser(subparsers)
    return parser


#: The warnings this run has printed: one command can meet the same one in several steps (score, its parts, ...).
_PRINTED: set[str] = set()


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning, without the source file and line: they mean nothing to a CLI user.
    text = f"finvae: warning: {_for_the_command_line(str(message))}"
    if text not in _PRINTED:
        _PRINTED.add(text)
        print(text, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``finvae`` command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name. Default: ``sys.argv[1:]``.

    Returns
    -------
    int
        0 on success, 2 on a data error (a one-line message on stderr); bad usage
        raises ``SystemExit(2)`` after argparse's message, as any argparse program does.

    Examples
    --------
    >>> from finvae.cli import main
    >>> main(["data", "sample", "--out", "prices.csv"])  # doctest: +SKIP
    0
    """
    args = build_parser().parse_args(argv)
    # A plain kill (SIGTERM, as `timeout` and batch systems' time limits send) unwinds like an error, so that
    # the atomic writes remove their temporary files on the way out.
    try:
        previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        return _run(args)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def _run(args: argparse.Namespace) -> int:
    with warnings.catch_warnings():  # restores the global warning display on the way out
        warnings.showwarning = _print_warning
        _PRINTED.clear()
        try:
            return args.func(args)
        except DataError as exc:
            print(f"finvae: error: {_for_the_command_line(str(exc))}", file=sys.stderr)
            return EXIT_DATA_ERROR
        except BrokenPipeError:  # the reader stopped early (`finvae score ... --out - | head`): not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # Python's recipe: the flush at exit must not fail again
            return EXIT_OK
        except KeyboardInterrupt:  # Ctrl-C: a way to stop (a checkpointed run resumes), not a crash
            run = getattr(args, "command", None) == "run"  # only finvae run takes --checkpoint
            resumes = " (with --checkpoint, the same command resumes)" if run else ""
            print(f"\nfinvae: interrupted. Finished files are kept{resumes}.", file=sys.stderr)
            return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
