"""The ``finvae`` command line: ``data sample`` and ``data download`` (through a yfinance stand-in)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import finvae.datasets._market as market
from finvae.cli import build_parser, main
from finvae.datasets import load_sp500_sample


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(market.CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(market, "_sleep", lambda seconds: None)


def _stand_in(prices: dict[str, pd.Series | None], calls: list[str]):
    """A ``_yf_download`` replacement answering in yfinance 1.x's (Price, Ticker) layout."""

    def download(tickers, start, end, interval):
        (ticker,) = tickers
        calls.append(ticker)
        series = prices[ticker]
        if series is None:  # a failed ticker: yfinance's all-NaN columns, no rows
            columns = pd.MultiIndex.from_product([["Adj Close", "Close", "High", "Low", "Open", "Volume"], [ticker]],
                                                 names=["Price", "Ticker"])
            return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], name="Date"), dtype=float)
        frame = pd.concat({"Close": series.to_frame(ticker), "Volume": (series * 0 + 1e6).to_frame(ticker)}, axis=1)
        frame.columns.names = ["Price", "Ticker"]
        return frame

    return download


def _path(start: float, seed: int, n: int = 25) -> pd.Series:
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-02", periods=n, name="Date")
    return pd.Series(start * np.exp(np.cumsum(rng.normal(0, 0.01, n))), index=index)


def test_sample_writes_the_bundled_prices(tmp_path, capsys):
    out = tmp_path / "prices.csv"
    assert main(["data", "sample", "--out", str(out)]) == 0
    written = pd.read_csv(out, index_col="Date", parse_dates=True)
    pd.testing.assert_frame_equal(written, load_sp500_sample(), check_index_type=False)
    assert "Wrote 8,313 dates × 20 tickers (1990-01-02 to 2022-12-28)" in capsys.readouterr().err


def test_sample_into_a_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "no-such-folder" / "prices.csv"
    assert main(["data", "sample", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"Could not write {out}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.parent.exists()


def test_download_writes_csv_in_order_with_a_progress_bar(tmp_path, capsys, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(market, "_yf_download", _stand_in({"AAPL": _path(100, 0), "MSFT": _path(40, 1)}, calls))
    out = tmp_path / "prices.csv"
    argv = ["data", "download", "MSFT", "AAPL", "--start", "2015-01-01", "--out", str(out)]
    assert main(argv) == 0
    written = pd.read_csv(out, index_col="Date", parse_dates=True)
    assert list(written.columns) == ["MSFT", "AAPL"]
    np.testing.assert_allclose(written["AAPL"], _path(100, 0))
    err = capsys.readouterr().err
    assert "Downloading prices" in err and "2/2" in err  # tqdm's bar over tickers

    assert main(argv) == 0 and calls == ["MSFT", "AAPL"]  # the cache answered the second time
    assert main([*argv, "--refresh"]) == 0 and calls == ["MSFT", "AAPL", "MSFT", "AAPL"]


def test_download_cache_dir_option(tmp_path, monkeypatch):
    monkeypatch.setattr(market, "_yf_download", _stand_in({"AAPL": _path(100, 0)}, []))
    assert main(["data", "download", "AAPL", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "p.csv")]) == 0
    assert list((tmp_path / "c" / "prices").glob("AAPL_1d_*.csv"))


def test_download_to_stdout(capsys, monkeypatch):
    monkeypatch.setattr(market, "_yf_download", _stand_in({"AAPL": _path(100, 0)}, []))
    assert main(["data", "download", "AAPL"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Date,AAPL\n2015-01-02,")


def test_data_error_is_one_line_and_exit_2(capsys, monkeypatch):
    monkeypatch.setattr(market, "_yf_download", _stand_in({"XYZ": None}, []))
    assert main(["data", "download", "XYZ", "--out", "never.csv"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("finvae: error: No prices for ticker 'XYZ'")
    assert not any("Traceback" in line for line in err)


def test_bad_interval_and_empty_range_exit_2(capsys):
    assert main(["data", "download", "AAPL", "--interval", "7d"]) == 2
    assert "finvae: error: interval='7d' is not one Yahoo Finance serves" in capsys.readouterr().err
    assert main(["data", "download", "AAPL", "--start", "2020-02-01", "--end", "2020-01-01"]) == 2
    assert "finvae: error: Empty date range" in capsys.readouterr().err


def test_partial_download_warns_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(market, "_yf_download", _stand_in({"AAPL": _path(100, 0), "XYZ": None}, []))
    assert main(["data", "download", "AAPL", "XYZ", "--out", str(tmp_path / "p.csv")]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("finvae: warning:")]
    assert len(warning) == 1 and "XYZ" in warning[0]


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exit_info:
        main(["data"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2


def test_parser_has_one_group_per_command():
    parser = build_parser()
    assert parser.parse_args(["data", "sample"]).func.__name__ == "_cmd_data_sample"
    assert parser.parse_args(["data", "download", "A", "B"]).tickers == ["A", "B"]


def test_runs_as_a_program(tmp_path):
    out = tmp_path / "prices.csv"
    done = subprocess.run([sys.executable, "-m", "finvae.cli", "data", "sample", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("Date,AAPL,AMD,")


def test_a_plain_kill_unwinds_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """SIGTERM (`timeout`, a batch system's time limit) mid-write: exit 128 + 15, and the temporary file is gone."""
    import os
    import signal
    import time

    import finvae.cli as cli
    from finvae._atomic import atomic_path

    def killed_mid_write(args):
        with atomic_path(tmp_path / "prices.csv") as temporary:
            temporary.write_text("Date,A\n")
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)  # the handler interrupts this
        return 0

    monkeypatch.setattr(cli, "_cmd_data_sample", killed_mid_write)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        main(["data", "sample"])
    assert stop.value.code == 128 + signal.SIGTERM and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_run_arguments_that_cannot_work_are_usage_errors(capsys):
    from finvae.cli import main as cli_main

    for argv, fragment in [
        (["run", "--seed", "-1"], "--seed: must be >= 0"),
        (["run", "--seed", str(2**32)], "--seed: must be >= 0 and <= 4294967295"),
        (["fit", "x.csv", "--model", ""], "expected a folder name"),
        (["run", "--checkpoint", " "], "expected a folder name"),
        (["run", "--vol-halflife", "inf"], "expected a finite number"),
        (["run", "--out", ""], "expected a folder name"),
        (["fit", "x.csv", "--model", "m", "--seed", "-3"], "--seed: must be >= 0"),
    ]:
        with pytest.raises(SystemExit) as stop:
            cli_main(argv)
        assert stop.value.code == 2
        assert fragment in capsys.readouterr().err, argv


def test_run_reads_simple_returns_as_what_they_are(tmp_path, capsys):
    from finvae.cli import main as cli_main
    from finvae.datasets import load_sp500_sample, prices_to_returns

    log = prices_to_returns(load_sp500_sample(), stale_days=None).loc["2014":"2017", ["AAPL", "KO", "XOM"]]
    log.to_csv(tmp_path / "log.csv")
    np.expm1(log).to_csv(tmp_path / "simple.csv")
    small = ["--assume", "returns", "--start", "2017-01-02", "--min-train", "500", "--epochs", "1",
             "--refit-every", "250", "--n-jobs", "1", "--no-figures", "--quiet"]
    assert cli_main(["run", "--prices-csv", str(tmp_path / "log.csv"), *small, "--out", str(tmp_path / "a")]) == 0
    assert cli_main(["run", "--prices-csv", str(tmp_path / "simple.csv"), *small, "--returns-kind", "simple",
                     "--out", str(tmp_path / "b")]) == 0
    a, b = (pd.read_csv(tmp_path / d / "backtest.csv", index_col=0) for d in "ab")
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)  # the same log returns inside, the same backtest
    capsys.readouterr()
    assert cli_main(["run", "--prices-csv", str(tmp_path / "simple.csv"), "--returns-kind", "simple",
                     "--out", str(tmp_path / "c")]) == 2
    assert "use it with --prices-csv and --assume returns" in capsys.readouterr().err
    assert cli_main(["run", "--tickers", "AAPL", "--returns-kind", "simple", "--out", str(tmp_path / "d")]) == 2
    assert "use it with --prices-csv" in capsys.readouterr().err  # before any download


def test_run_reports_where_its_data_came_from(tmp_path):
    from finvae.cli import main as cli_main
    from finvae.datasets import load_sp500_sample, prices_to_returns

    log = prices_to_returns(load_sp500_sample(), stale_days=None).loc["2014":"2017", ["AAPL", "KO", "XOM"]]
    log.to_csv(tmp_path / "log.csv")
    assert cli_main(["run", "--prices-csv", str(tmp_path / "log.csv"), "--assume", "returns", "--end", "2017-06-30",
                     "--start", "2017-01-02", "--min-train", "500", "--epochs", "1", "--refit-every", "250",
                     "--n-jobs", "1", "--no-figures", "--quiet", "--out", str(tmp_path / "a")]) == 0
    page = (tmp_path / "a" / "report.html").read_text()
    assert f"{tmp_path / 'log.csv'} (--assume returns, --returns-kind log); up to --end 2017-06-30" in page
    assert "2014-01-02 to 2017-06-30, 881 dates, 3 assets" in page  # what the run read, its training included


def test_run_takes_the_trading_costs(tmp_path, capsys):
    from finvae.cli import main as cli_main
    from finvae.datasets import load_sp500_sample

    load_sp500_sample().loc["2014":"2017", ["AAPL", "KO", "XOM"]].to_csv(tmp_path / "prices.csv")
    small = ["--prices-csv", str(tmp_path / "prices.csv"), "--start", "2017-01-02", "--min-train", "500",
             "--epochs", "1", "--refit-every", "250", "--n-jobs", "1", "--no-figures", "--quiet"]
    assert cli_main(["run", *small, "--cost-bps", "0", "--out", str(tmp_path / "free")]) == 0
    printed = capsys.readouterr()
    assert "after costs of 0 bps" in printed.out and "scoring starts at" not in printed.err
    no_start = [a for i, a in enumerate(small) if a != "--start" and (i == 0 or small[i - 1] != "--start")]
    assert cli_main(["run", *no_start, "--out", str(tmp_path / "default")]) == 0  # data from 2014: no 2000 start
    assert "scoring starts at" not in capsys.readouterr().err
    assert cli_main(["run", *small, "--cost-bps", "50", "--out", str(tmp_path / "dear")]) == 0
    assert "after costs of 50 bps" in capsys.readouterr().out
    assert "50" in (tmp_path / "dear" / "report.html").read_text().split("cost_bps")[1][:40]


def test_fit_and_score_read_simple_returns_as_what_they_are(tmp_path, capsys):
    from finvae.cli import main as cli_main
    from finvae.datasets import load_sp500_sample, prices_to_returns

    log = prices_to_returns(load_sp500_sample(), stale_days=None).loc["2015":"2017", ["AAPL", "KO", "XOM"]]
    log.to_csv(tmp_path / "log.csv")
    np.expm1(log).to_csv(tmp_path / "simple.csv")
    small = ["--window", "10", "--latent-dim", "2", "--epochs", "2", "--seed", "3", "--quiet"]
    for name, kind in (("log", "log"), ("simple", "simple")):
        assert cli_main(["fit", str(tmp_path / f"{name}.csv"), "--model", str(tmp_path / f"m_{name}"), "--assume",
                         "returns", "--returns-kind", kind, *small]) == 0
        assert cli_main(["score", str(tmp_path / f"{name}.csv"), "--model", str(tmp_path / f"m_{name}"), "--assume",
                         "returns", "--returns-kind", kind, "--out", str(tmp_path / f"{name}_scores.csv")]) == 0
    a, b = (pd.read_csv(tmp_path / f"{n}_scores.csv", index_col=0) for n in ("log", "simple"))
    pd.testing.assert_frame_equal(a, b, rtol=1e-5)  # the same log returns inside, the same scores
    capsys.readouterr()
    assert cli_main(["score", str(tmp_path / "simple.csv"), "--model", str(tmp_path / "m_simple"),
                     "--out", str(tmp_path / "x.csv")]) == 0  # the flag forgotten: said, since the fit recorded it
    err = capsys.readouterr().err
    assert "read the file of the model" in err and "as simple returns" in err and "pass --returns-kind simple" in err
    assert cli_main(["fit", str(tmp_path / "simple.csv"), "--model", str(tmp_path / "m_x"), "--returns-kind",
                     "simple", *small]) == 2
    assert "use it with PRICES and --assume returns" in capsys.readouterr().err
