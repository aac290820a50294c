"""The main job (``run_main_job``) and ``finvae run``, on a tiny slice of the sample with few epochs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

import finvae._main_job as main_job
import finvae.datasets as datasets
from finvae import DataError, FinVAE
from finvae._main_job import MarketShockVAE, format_summary, run_main_job
from finvae.cli import build_parser, main
from finvae.datasets import load_sp500_sample, prices_to_returns

ASSETS = ["AAPL", "JPM", "XOM", "KO", "MSFT"]
TINY = dict(start="2000-01-01", epochs=2, refit_every=300, n_jobs=1, verbose=0)
CSV_FILES = ["factors.csv", "scores.csv", "flags.csv", "exposures.csv", "summary.csv", "backtest.csv"]
PNG_FILES = ["scores.png", "factors.png", "equity_drawdowns.png", "asset_contributions.png"]


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return load_sp500_sample().loc["1996":"2001", ASSETS]


@pytest.fixture(scope="module")
def returns(prices) -> pd.DataFrame:
    return prices_to_returns(prices)


@pytest.fixture(scope="module")
def job(returns, tmp_path_factory):
    out = tmp_path_factory.mktemp("job")
    before = returns.copy()
    result = run_main_job(returns, out_dir=out, random_state=0, **TINY)
    pd.testing.assert_frame_equal(returns, before)  # the caller's returns are left as they were
    return result, out


def test_writes_every_table_and_figure(job):
    result, out = job
    assert sorted(p.name for p in result.files) == sorted(CSV_FILES + PNG_FILES + ["report.html"])
    for name in CSV_FILES + PNG_FILES:
        assert (out / name).stat().st_size > 0, name
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # ...and nothing else: no temporary file is left behind
    assert sorted(p.name for p in out.iterdir()) == sorted(CSV_FILES + PNG_FILES + ["report.html"])


def test_tables_are_aligned_to_the_dates(job, returns):
    result, out = job
    scored = returns.loc["2000-01-01":].index

    def read(name):
        return pd.read_csv(out / name, index_col="Date", parse_dates=True)

    scores, flags, backtest, factors = read("scores.csv"), read("flags.csv"), read("backtest.csv"), read("factors.csv")
    for table in (scores, flags, backtest):
        assert table.index.equals(pd.DatetimeIndex(scored, name="Date"))
    assert factors.index.equals(returns.index) and list(factors.columns) == ["factor_0", "factor_1", "factor_2"]
    assert factors.iloc[:19].isna().all().all() and factors.iloc[19:].notna().all().all()  # NaN: first window only
    assert list(scores.columns) == ["score", "threshold", "refit_date"]
    assert flags["flag"].dtype == bool
    # The flags are the walk-forward's, and the exposure drops the day after a flag.
    pd.testing.assert_series_equal(flags["flag"], result.walk_forward["flag"], check_names=False,
                                   check_index_type=False, check_freq=False)
    first = flags.index.get_loc(flags.index[flags["flag"]][0])
    assert flags["exposure"].iloc[first] == 1.0
    assert flags["exposure"].iloc[first + 1] == main_job.DEFAULT_EXPOSURE_WHEN_FLAGGED

    betas = pd.read_csv(out / "exposures.csv", index_col="asset")
    assert list(betas.index) == ASSETS and list(betas.columns) == ["factor_0", "factor_1", "factor_2", "r2"]
    summary = pd.read_csv(out / "summary.csv", index_col="measure")
    assert list(summary.columns) == ["overlay", "buy & hold", "vol target"]
    assert summary.loc["max drawdown"].le(0).all() and summary.loc["average exposure", "buy & hold"] == 1.0


def test_factors_come_from_a_model_trained_before_the_backtest(job, returns):
    result, _ = job
    # The reference model saw only the days before the first scored date.
    assert result.model.n_features_in_ == len(ASSETS)
    first_scored = result.walk_forward.index[0]
    assert result.walk_forward["refit_date"].iloc[0] < first_scored
    refit = result.model.__class__(**result.model.get_params()).fit(returns.loc[: first_scored].iloc[:-1])
    pd.testing.assert_frame_equal(refit.transform(returns), result.factors)


def test_market_signal_flags_on_the_market_part(returns):
    train = returns.loc[:"1999"]
    model = MarketShockVAE(epochs=2, contamination=0.02, random_state=0, verbose=0).fit(train)
    pd.testing.assert_series_equal(model.score(returns), model.score_parts(returns)["market"].rename("score"))
    # The threshold flags the share `contamination` of the training dates on this score.
    assert model.predict(train).sum() / model.score(train).notna().sum() == pytest.approx(0.02, abs=0.002)


def test_the_walk_forward_signal_model_gets_the_signal_and_its_volatility_half_life(returns, tmp_path, monkeypatch):
    seen = []
    real_walk_forward = main_job.walk_forward

    def spy(estimator, *args, **kwargs):
        seen.append(estimator)
        return real_walk_forward(estimator, *args, **kwargs)

    monkeypatch.setattr(main_job, "walk_forward", spy)
    result = run_main_job(returns, out_dir=tmp_path, signal="score", vol_halflife=30, hold=3,
                          exposure_when_flagged=0.25, figures=False, **TINY)
    run_main_job(returns, out_dir=tmp_path, signal="market", hold=3, figures=False, **TINY)
    estimator, market = seen
    assert type(estimator) is main_job.FinVAE and estimator.vol_halflife == 30
    assert type(market) is MarketShockVAE and market.vol_halflife == FinVAE().vol_halflife  # None: FinVAE's own
    assert result.model.vol_halflife == FinVAE().vol_halflife  # the reference model (factors) keeps the default
    # De-risked days sit at the exposure asked for.
    assert set(result.overlay.positions.round(6).unique()) <= {0.25, 1.0}


def test_a_rerun_with_the_checkpoint_folder_fits_nothing_and_writes_the_same_tables(returns, tmp_path, monkeypatch):
    checkpoint = tmp_path / "checkpoint"
    first = run_main_job(returns, out_dir=tmp_path / "a", figures=False, checkpoint_dir=checkpoint, random_state=0,
                         **TINY)
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("a checkpointed fit was redone"))
    again = run_main_job(returns, out_dir=tmp_path / "b", figures=False, checkpoint_dir=checkpoint, random_state=0,
                         **TINY)
    pd.testing.assert_frame_equal(again.walk_forward, first.walk_forward)
    pd.testing.assert_frame_equal(again.factors, first.factors)
    for name in CSV_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_errors_name_the_problem(returns, tmp_path):
    with pytest.raises(DataError, match="Nothing to score"):
        run_main_job(returns, out_dir=tmp_path, **{**TINY, "start": "2030-01-01"})
    with pytest.raises(ValueError, match="signal must be one of"):
        run_main_job(returns, out_dir=tmp_path, signal="vol", **TINY)
    for bad, message in [(dict(hold=0), "hold must be an integer ≥ 1"),
                         (dict(exposure_when_flagged=-0.1), r"exposure_when_flagged must be in \[0, 1\]"),
                         (dict(vol_halflife=0), "vol_halflife must be a number of days > 0"),
                         (dict(vol_halflife=(5, 60, 90)), "vol_halflife must be .* or a pair")]:
        with pytest.raises(ValueError, match=message):
            run_main_job(returns, out_dir=tmp_path, **bad, **TINY)


def test_an_asset_listed_after_the_training_years_is_named_with_its_first_date(returns, tmp_path, monkeypatch):
    late = returns.copy()
    late.loc[:"2000-06-30", "MSFT"] = float("nan")
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("fitted before the check"))
    with pytest.raises(DataError, match=r"before the walk-forward starts on 2000-01-03.*MSFT from 2000-07-03"):
        run_main_job(late, out_dir=tmp_path, **TINY)


def test_format_summary_prints_percentages_and_the_period(job):
    result, _ = job
    text = format_summary(result.summary)
    assert text.startswith("Backtest 2000-01-03 to 2001-12-31, after costs of 5 bps:")
    assert "max drawdown" in text and "%" in text and "Sharpe" in text


# --------------------------------------------------------------------------- the command line


def test_run_without_arguments_uses_the_bundled_sample_and_the_documented_defaults(monkeypatch, capsys):
    seen = {}

    def fake_job(returns, **kwargs):  # the real job on the whole sample takes minutes
        seen.update(kwargs, shape=returns.shape, first=returns.index[0])
        raise DataError("stop here")

    monkeypatch.setattr(main_job, "run_main_job", fake_job)
    assert main(["run"]) == 2
    assert seen["shape"] == (8312, 20) and seen["first"] == pd.Timestamp("1990-01-03")
    assert seen["out_dir"] == "finvae-output" and seen["start"] == "2000-01-01"
    assert (seen["window"], seen["latent_dim"], seen["refit_every"], seen["n_jobs"]) == (20, 3, 126, 2)
    # One signal: the walk-forward flags on FinVAE's own score, with its own volatility.
    assert (seen["signal"], seen["vol_halflife"], seen["random_state"]) == ("score", None, 0)
    assert (seen["hold"], seen["exposure_when_flagged"]) == (63, 0.5)
    # The command line's defaults are the job's own.
    assert (seen["signal"], seen["vol_halflife"], seen["hold"], seen["exposure_when_flagged"]) == (
        main_job.DEFAULT_SIGNAL, main_job.DEFAULT_VOL_HALFLIFE, main_job.DEFAULT_HOLD,
        main_job.DEFAULT_EXPOSURE_WHEN_FLAGGED)
    assert "finvae: error: stop here" in capsys.readouterr().err


def test_run_on_a_prices_csv_exits_0_and_prints_the_summary(prices, tmp_path, capsys):
    path = tmp_path / "prices.csv"
    prices.to_csv(path)
    out = tmp_path / "out"
    status = main(["run", "--prices-csv", str(path), "--end", "2001-06-29", "--epochs", "2", "--refit-every", "300",
                   "--n-jobs", "1", "--seed", "1", "--latent-dim", "2", "--signal", "market", "--out", str(out),
                   "--no-figures", "--quiet"])
    assert status == 0
    printed = capsys.readouterr().out
    assert "Backtest 2000-01-03 to 2001-06-29" in printed
    for row in ("annual return", "Sharpe", "max drawdown", "days de-risked"):
        assert row in printed
    assert "overlay" in printed and "buy & hold" in printed and "vol target" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(CSV_FILES + ["report.html"])
    assert list(pd.read_csv(out / "factors.csv", index_col="Date").columns) == ["factor_0", "factor_1"]


def test_run_with_tickers_downloads_through_the_cache(monkeypatch, prices, tmp_path, capsys):
    calls = []

    def fake_download(tickers, start=None, end=None, **kwargs):
        calls.append((list(tickers), start, end))
        return prices[list(tickers)]

    monkeypatch.setattr(datasets, "download_prices", fake_download)
    monkeypatch.setattr(main_job, "run_main_job", lambda returns, **kw: (_ for _ in ()).throw(DataError(
        f"got {list(returns.columns)} to {returns.index[-1].date()}")))
    assert main(["run", "--tickers", "AAPL", "KO", "--end", "2001-01-31", "--out", str(tmp_path)]) == 2
    # Downloaded from the first price available (training needs the years before --start) up to --end.
    assert calls == [(["AAPL", "KO"], None, "2001-02-01")]  # download_prices' end is exclusive: --end is kept
    assert "got ['AAPL', 'KO'] to 2001-01-31" in capsys.readouterr().err


def test_run_refuses_two_data_sources():
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["run", "--tickers", "AAPL", "--prices-csv", "p.csv"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--window", "1", "--window: must be >= 2, got 1"),
        ("--hold", "2.5", "--hold: expected an integer, got '2.5'"),
        ("--exposure-when-flagged", "1.5", "--exposure-when-flagged: must be >= 0 and <= 1, got 1.5"),
        ("--vol-halflife", "0", "--vol-halflife: must be > 0, got 0"),
        ("--refit-every", "-3", "--refit-every: must be >= 1, got -3"),
    ],
)
def test_run_rejects_out_of_range_options_before_any_work(option, value, message, monkeypatch, capsys):
    monkeypatch.setattr(main_job, "run_main_job", lambda *a, **k: pytest.fail("the job should not start"))
    with pytest.raises(SystemExit) as stop:
        main(["run", option, value])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_run_takes_one_or_two_volatility_half_lives(monkeypatch, capsys):
    seen = []

    def fake_job(returns, **kwargs):
        seen.append(kwargs["vol_halflife"])
        raise DataError("stop here")

    monkeypatch.setattr(main_job, "run_main_job", fake_job)
    assert main(["run", "--vol-halflife", "90"]) == 2
    assert main(["run", "--vol-halflife", "5", "120"]) == 2
    assert seen == [90.0, (5.0, 120.0)]
    capsys.readouterr()
    assert main(["run", "--vol-halflife", "5", "60", "90"]) == 2
    assert "--vol-halflife takes one number of days or two (fast slow); got 3" in capsys.readouterr().err
    assert len(seen) == 2  # refused before the job started


@pytest.mark.parametrize("option", ["--out", "--checkpoint"])
def test_run_into_a_folder_it_cannot_write_is_one_line_and_exit_2_before_any_fit(option, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("fitted before checking the folders"))
    argv = ["run", option, str(blocker / "sub"), "--quiet"]
    if option == "--checkpoint":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert str(blocker / "sub") in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["--start", "notadate"], "argument --start: expected a date such as 2024-01-31 (or 31.01.2024, 01/31/2024, "
                              "2024-01, 2024), got 'notadate'"),
    (["--end", "2020-13-45"], "argument --end: expected a date"),
    (["--n-jobs", "0"], "argument --n-jobs: must be a number of processes >= 1, or -1 for one per core"),
])
def test_run_rejects_bad_dates_and_n_jobs_as_usage_errors(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(main_job, "run_main_job", lambda *a, **k: pytest.fail("the job should not start"))
    with pytest.raises(SystemExit) as stop:
        main(["run", *argv])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_run_on_a_missing_file_or_an_empty_range_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(main_job, "run_main_job", lambda *a, **k: pytest.fail("the job should not start"))
    assert main(["run", "--prices-csv", str(tmp_path / "missing.csv"), "--quiet"]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err
    assert main(["run", "--end", "1980-01-01", "--quiet"]) == 2
    assert "no dates between its start and 1980-01-01" in capsys.readouterr().err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, a folder no file can be made in")
def test_run_into_a_folder_that_exists_but_takes_no_file(monkeypatch, capsys):
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("fitted before checking the folders"))
    assert main(["run", "--out", "/proc", "--quiet"]) == 2
    assert "Cannot write to the output folder /proc" in capsys.readouterr().err


def test_run_main_job_checks_refit_every_first_and_takes_start_none(tmp_path, monkeypatch):
    returns = prices_to_returns(load_sp500_sample(), stale_days=None).iloc[:400, :3]
    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("fitted before checking refit_every"))
    with pytest.raises(ValueError, match="refit_every must be an integer ≥ 1; got 0"):
        run_main_job(returns, out_dir=tmp_path, refit_every=0)
    with pytest.raises(DataError, match="Nothing to score.*row 756"):  # None: from min_train, not past the end
        run_main_job(returns, out_dir=tmp_path, start=None)


def test_a_run_removes_the_temporary_files_a_killed_run_left(tmp_path):
    returns = prices_to_returns(load_sp500_sample(), stale_days=None).loc["2014":"2017", ["AAPL", "KO", "XOM"]]
    (tmp_path / ".scores.csv.x1y2z3.tmp.csv").write_text("half a file")  # as SIGKILL leaves it
    (tmp_path / "scores.png").write_bytes(b"an earlier run's figure")
    (tmp_path / "notes.png").write_bytes(b"the user's own")
    run_main_job(returns, out_dir=tmp_path, start="2017-01-01", min_train=500, epochs=1, refit_every=250, n_jobs=1,
                 figures=False, verbose=0)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert not (tmp_path / "scores.png").exists() and (tmp_path / "notes.png").exists()  # no stale figure beside


def test_a_start_before_min_train_is_moved_with_a_warning_and_reported_as_used(tmp_path):
    returns = prices_to_returns(load_sp500_sample(), stale_days=None).loc["2014":"2016", ["AAPL", "KO", "XOM"]]
    with pytest.warns(UserWarning, match=r"scoring starts at 2015-\d\d-\d\d, not at start=2014-03-03: the first fit "
                                         r"needs min_train=300"):
        result = run_main_job(returns, out_dir=tmp_path, start="2014-03-03", min_train=300, epochs=1,
                              refit_every=400, n_jobs=1, figures=False, verbose=0)
    used = str(result.walk_forward.index[0].date())
    assert used.startswith("2015-") and f"<td>{used}</td>" in (tmp_path / "report.html").read_text()


def test_a_walk_forward_without_any_score_is_refused_not_backtested(returns, tmp_path, monkeypatch):
    def unscored(estimator, data, **kwargs):  # as on a universe where no date reaches min_coverage
        index = data.loc[kwargs["start"]:].index
        return pd.DataFrame({"score": float("nan"), "flag": False, "threshold": float("nan"), "refit_date": index[0]},
                            index=index)

    monkeypatch.setattr(main_job, "walk_forward", unscored)
    with pytest.raises(DataError, match="no date from .* was scored.*Drop the assets that trade on few dates"):
        run_main_job(returns, out_dir=tmp_path, figures=False, **TINY)
