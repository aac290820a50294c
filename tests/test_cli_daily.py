"""``finvae fit`` and ``finvae score``: the daily routine from the command line, on a tiny slice of the sample."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from finvae import DataError, FinVAE
from finvae.cli import main
from finvae.datasets import load_sp500_sample, prices_to_returns

ASSETS = ["AAPL", "JPM", "XOM", "KO", "MSFT"]
SMALL = ["--window", "10", "--latent-dim", "2", "--epochs", "2", "--seed", "3", "--quiet"]
FIT_END = "2018-12-31"


@pytest.fixture(scope="module")
def prices() -> pd.DataFrame:
    return load_sp500_sample().loc["2017-06":"2019-06", ASSETS]


@pytest.fixture(scope="module")
def files(prices, tmp_path_factory):
    """A price file, a model fitted on it by the CLI, and its scores."""
    folder = tmp_path_factory.mktemp("daily")
    prices.to_csv(folder / "prices.csv")
    assert main(["fit", str(folder / "prices.csv"), "--model", str(folder / "model"), "--start", "2017-07-01",
                 "--end", FIT_END, *SMALL]) == 0
    assert main(["score", str(folder / "prices.csv"), "--model", str(folder / "model"),
                 "--out", str(folder / "scores.csv")]) == 0
    return folder


def _read(path) -> pd.DataFrame:
    return pd.read_csv(path, index_col="Date", parse_dates=True, keep_default_na=False, na_values=[""])


def test_fit_saves_the_model_python_would_fit(files, prices):
    returns = prices_to_returns(prices).loc["2017-07-01":FIT_END]
    expected = FinVAE(window=10, latent_dim=2, epochs=2, random_state=3, verbose=0).fit(returns)
    loaded = FinVAE.load(files / "model")
    assert loaded.threshold_ == pytest.approx(expected.threshold_, rel=1e-12)  # same seed, same dates: same model
    assert list(loaded.feature_names_in_) == ASSETS and loaded.window == 10
    info = json.loads((files / "model" / "fit.json").read_text())
    assert (info["start"], info["end"], info["n_dates"]) == (str(returns.index[0].date()), FIT_END, len(returns))


def test_fit_prints_what_it_did(files, capsys):
    assert main(["fit", str(files / "prices.csv"), "--model", str(files / "model2"), "--end", "2018-06-29",
                 *SMALL]) == 0
    captured = capsys.readouterr()
    assert "looks like prices" in captured.err and "--assume prices" in captured.err  # load_returns' decision
    assert "2017-06-02 to 2018-06-29" in captured.out and "Threshold" in captured.out
    assert "epochs" in captured.out and str(files / "model2") in captured.out
    assert sorted(p.name for p in (files / "model2").iterdir()) == ["finvae.json", "fit.json", "model.safetensors"]
    assert not [p for p in files.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_score_has_every_part_the_threshold_the_flag_and_top_assets(files, prices):
    model = FinVAE.load(files / "model")
    returns = prices_to_returns(prices)
    table = _read(files / "scores.csv")
    parts = model.score_parts(returns)
    assert list(table.columns) == ["score", *parts.columns, "threshold", "flag", "top_assets", "in_sample"]
    assert table.index.equals(returns.index.rename("Date"))
    np.testing.assert_allclose(table["score"], model.score(returns), rtol=1e-5)
    np.testing.assert_allclose(table[list(parts.columns)], parts, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table["threshold"], model.threshold_, rtol=1e-5)
    assert table["flag"].tolist() == model.predict(returns).tolist()
    fitted_on = (returns.index >= "2017-07-01") & (returns.index <= FIT_END)  # fit --start and --end
    assert table["in_sample"].to_numpy().tolist() == fitted_on.tolist()
    shares = model.score_assets(returns)
    scored = table["score"].notna()
    assert table.loc[~scored, "top_assets"].isna().all()
    for date in table.index[scored][::50]:
        named = [item.split(" ") for item in table.at[date, "top_assets"].split("; ")]
        assert len(named) == 3 and named[0][0] == shares.loc[date].idxmax()
        assert float(named[0][1]) == pytest.approx(shares.loc[date].max(), abs=0.005)


def test_score_start_keeps_the_history_and_reordered_columns_give_the_same(files, prices, capsys):
    prices[list(reversed(ASSETS))].to_csv(files / "reordered.csv")
    out = files / "recent.csv"
    (out).write_text("an older file, replaced whole\n")
    assert main(["score", str(files / "reordered.csv"), "--model", str(files / "model"), "--out", str(out),
                 "--start", "2019-01-02"]) == 0
    recent, full = _read(out), _read(files / "scores.csv")
    assert recent.index[0] == pd.Timestamp("2019-01-02")
    pd.testing.assert_frame_equal(recent, full.loc["2019-01-02":])  # the earlier dates still fed the scores
    assert not [p for p in files.iterdir() if p.name.endswith(".tmp")]
    printed = capsys.readouterr().out
    assert "Latest, 2019-06-28: score" in printed and "out of sample" in printed


def test_a_new_day_leaves_the_earlier_scores_as_they_were(files, prices, tmp_path):
    prices.loc[:"2019-03-29"].to_csv(tmp_path / "until_march.csv")
    assert main(["score", str(tmp_path / "until_march.csv"), "--model", str(files / "model"),
                 "--out", str(tmp_path / "march.csv")]) == 0
    earlier, full = _read(tmp_path / "march.csv"), _read(files / "scores.csv")
    pd.testing.assert_frame_equal(earlier, full.loc[:"2019-03-29"])  # causal: later rows change no earlier score


def _fails(argv, capsys, *fragments):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("finvae: error: ") and not any("Traceback" in line for line in err)
    for fragment in fragments:
        assert fragment in err[-1], err[-1]


def test_bad_input_is_one_line_and_exit_2(files, prices, capsys, tmp_path):
    model, out = str(files / "model"), str(tmp_path / "out.csv")
    _fails(["score", str(tmp_path / "missing.csv"), "--model", model, "--out", out], capsys, "no such file")
    prices.drop(columns="KO").rename(columns={"XOM": "CVX"}).to_csv(tmp_path / "other.csv")
    _fails(["score", str(tmp_path / "other.csv"), "--model", model, "--out", out], capsys,
           "other assets", "missing XOM, KO", "not at fit CVX")
    prices.iloc[:8].to_csv(tmp_path / "short.csv")
    _fails(["score", str(tmp_path / "short.csv"), "--model", model, "--out", out], capsys, "fewer than window=10")
    _fails(["fit", str(tmp_path / "short.csv"), "--model", str(tmp_path / "m"), *SMALL], capsys, "short.csv")
    broken = prices.copy()
    broken.iloc[30, 1] = 0.0
    broken.to_csv(tmp_path / "zero.csv")
    _fails(["fit", str(tmp_path / "zero.csv"), "--model", str(tmp_path / "m"), *SMALL], capsys,
           "prices must be positive", "JPM on", "--assume returns")
    _fails(["score", str(files / "prices.csv"), "--model", str(tmp_path), "--out", out], capsys,
           "not a finvae model folder")
    assert not (tmp_path / "out.csv").exists()
    _fails(["fit", str(files / "prices.csv"), "--model", str(tmp_path), *SMALL], capsys,
           "is not a finvae model folder; it is left as it is")


def test_damaged_model_is_a_data_error(files, tmp_path, capsys):
    damaged = tmp_path / "model"
    damaged.mkdir()
    for path in (files / "model").iterdir():
        (damaged / path.name).write_bytes(path.read_bytes()[:100])
    _fails(["score", str(files / "prices.csv"), "--model", str(damaged), "--out", str(tmp_path / "s.csv")], capsys,
           "finvae.json", "not valid JSON")


def test_python_dash_m_finvae(tmp_path):
    argv = ["score", str(tmp_path / "none.csv"), "--model", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    done = subprocess.run([sys.executable, "-m", "finvae", *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.startswith("finvae: error: ") and "Traceback" not in done.stderr


def test_advice_is_given_as_options_not_python(files, prices, capsys, tmp_path):
    """Hints written for Python users (an argument, a function) are said as the options that do the same."""
    _fails(["fit", str(files / "prices.csv"), "--assume", "returns", "--model", str(tmp_path / "m"), *SMALL], capsys,
           "look like price levels", "Pass --assume prices")
    (tmp_path / "header.csv").write_text("Date,AAPL,KO\n")
    _fails(["fit", str(tmp_path / "header.csv"), "--model", str(tmp_path / "m"), *SMALL], capsys,
           "has a header but no rows of data")
    (tmp_path / "a-file").write_text("not a folder")
    _fails(["fit", str(files / "prices.csv"), "--model", str(tmp_path / "a-file" / "m"), *SMALL], capsys,
           "a-file is a file, so no model folder can be made under it")


def test_a_reader_that_stops_early_gets_no_traceback(files):
    """`finvae score ... --out - | head -1`: the closed pipe ends the command quietly."""
    command = (f"{sys.executable} -m finvae score {files / 'prices.csv'} --model {files / 'model'} --out - "
               "| head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("Date,score,")
    assert "Traceback" not in done.stderr and "Error" not in done.stderr


def test_dates_with_a_time_or_a_zone_are_whole_days_and_fit_start_bounds_in_sample(prices, tmp_path, capsys):
    closes = prices.set_axis(prices.index + pd.Timedelta(hours=16))  # 16:00 closes
    closes.to_csv(tmp_path / "closes.csv")
    utc = prices.set_axis(prices.index.tz_localize("UTC"))  # to_csv writes "2017-06-01 00:00:00+00:00"
    utc.to_csv(tmp_path / "utc.csv")
    for name in ("closes", "utc"):
        model, out = str(tmp_path / f"{name}_model"), str(tmp_path / f"{name}_scores.csv")
        assert main(["fit", str(tmp_path / f"{name}.csv"), "--model", model, "--start", "2018-01-02",
                     "--end", "2018-06-29", *SMALL]) == 0
        assert "to 2018-06-29" in capsys.readouterr().out  # the end day itself, 16:00 close included
        assert main(["score", str(tmp_path / f"{name}.csv"), "--model", model, "--out", out,
                     "--end", "2019-01-02"]) == 0
        printed = capsys.readouterr().out
        table = _read(out)
        assert str(table.index[-1].date()) == "2019-01-02"
        days = table.index.tz_localize(None).normalize() if table.index.tz is not None else table.index.normalize()
        assert table["in_sample"].tolist() == ((days >= "2018-01-02") & (days <= "2018-06-29")).tolist()
        assert "are before its first date, 2018-01-02, and out of sample too" in printed


def test_cron_mishaps_get_one_line_in_command_line_terms(files, prices, tmp_path, capsys):
    model, out = str(files / "model"), str(tmp_path / "out.csv")
    _fails(["score", str(files / "prices.csv"), "--model", model, "--out", out, "--start", "2019-02-01",
            "--end", "2019-01-01"], capsys, "--start 2019-02-01 is after --end 2019-01-01")
    twice = pd.concat([prices, prices.iloc[[-1]]])
    twice.to_csv(tmp_path / "twice.csv")
    _fails(["score", str(tmp_path / "twice.csv"), "--model", model, "--out", out], capsys,
           "twice.csv", "Keep one row per date in the file")
    prices.iloc[::-1].to_csv(tmp_path / "newest_first.csv")
    _fails(["score", str(tmp_path / "newest_first.csv"), "--model", model, "--out", out], capsys,
           "Sort the file's rows by date, oldest first")
    (tmp_path / "wide.csv").write_text(prices.to_csv() + "2019-07-01,1,2,3,4,5,6,7\n")
    _fails(["score", str(tmp_path / "wide.csv"), "--model", model, "--out", out], capsys, "Could not read")
    zeros = prices.copy()
    zeros.iloc[10, 2] = 0.0
    zeros.to_csv(tmp_path / "zeros.csv")
    _fails(["score", str(tmp_path / "zeros.csv"), "--model", model, "--out", out], capsys,
           "zeros.csv: prices must be positive", "empty those cells in the file")
    dead = prices.copy()
    dead.iloc[len(dead) // 2:, 2] = 0.0  # a coin that died, quoted at 0 for months: still prices, not percent returns
    dead.to_csv(tmp_path / "dead.csv")
    _fails(["score", str(tmp_path / "dead.csv"), "--model", model, "--out", out], capsys,
           "dead.csv' looks like prices", "zero or negative", "empty those cells in the file (they are treated as "
           "gaps), and pass --assume prices.")


def test_a_last_date_without_a_score_is_said_so(files, prices, tmp_path, capsys):
    late = prices.copy()
    late.iloc[-1, :3] = np.nan  # the vendor has not sent three of the five prices tonight
    late.to_csv(tmp_path / "late.csv")
    assert main(["score", str(tmp_path / "late.csv"), "--model", str(files / "model"),
                 "--out", str(tmp_path / "s.csv")]) == 0
    printed = capsys.readouterr().out
    assert "Last date, 2019-06-28: no score (2 of 5 assets have a return" in printed
    assert "Latest, 2019-06-27: score" in printed


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    from finvae import cli

    def interrupted(args):
        raise KeyboardInterrupt

    args = cli.build_parser().parse_args(["data", "sample", "--out", "-"])
    monkeypatch.setattr(args, "func", interrupted)
    assert cli._run(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["finvae: interrupted. Finished files are kept."]  # only finvae run takes --checkpoint
    args = cli.build_parser().parse_args(["run", "--out", "x"])
    monkeypatch.setattr(args, "func", interrupted)
    assert cli._run(args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["finvae: interrupted. Finished files are kept (with --checkpoint, the same command resumes)."]


def test_a_refit_keeps_the_user_s_files_and_dates_belong_to_the_model_there(files, prices, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(files / "model", model)
    (model / "NOTES.txt").write_text("my notes")
    _fails(["fit", str(files / "prices.csv"), "--model", str(model), *SMALL], capsys,
           "holds other files besides its model (NOTES.txt)", "Move them out")
    assert (model / "NOTES.txt").read_text() == "my notes"  # nothing deleted
    (model / "NOTES.txt").unlink()
    (model / ".gitignore").write_text("*.csv\n")  # the user's, though hidden
    _fails(["fit", str(files / "prices.csv"), "--model", str(model), *SMALL], capsys, "(.gitignore)")
    (model / ".gitignore").unlink()
    (model / ".model.safetensors.x1.tmp.safetensors").write_bytes(b"")  # a killed save's leftover, and clutter
    (model / ".DS_Store").write_bytes(b"")
    assert main(["fit", str(files / "prices.csv"), "--model", str(model), "--end", FIT_END, *SMALL]) == 0
    # A fit.json from before the tie to the tensors (no tensors_sha256) still gives the dates.
    info = json.loads((model / "fit.json").read_text())
    del info["tensors_sha256"]
    (model / "fit.json").write_text(json.dumps(info))
    out = tmp_path / "old.csv"
    assert main(["score", str(files / "prices.csv"), "--model", str(model), "--out", str(out)]) == 0
    assert "in_sample" in _read(out).columns
    assert main(["fit", str(files / "prices.csv"), "--model", str(model), "--end", FIT_END, *SMALL]) == 0
    # Another model saved over the folder from Python: fit.json's dates are not its dates.
    FinVAE(window=10, latent_dim=2, epochs=1, random_state=0, verbose=0).fit(
        prices_to_returns(prices).loc[:"2019-03-29"]).save(model)
    out = tmp_path / "scores.csv"
    assert main(["score", str(files / "prices.csv"), "--model", str(model), "--out", str(out)]) == 0
    assert "fitted on dates up to" not in capsys.readouterr().err
    assert "in_sample" not in _read(out).columns  # unknown, not False for the dates this model was fitted on


def test_score_refuses_to_write_over_its_price_file(files, tmp_path, capsys):
    import shutil

    prices = tmp_path / "prices.csv"
    shutil.copy(files / "prices.csv", prices)
    before = prices.read_bytes()
    _fails(["score", str(prices), "--model", str(files / "model"), "--out", str(prices)], capsys,
           "is the price file itself")
    assert prices.read_bytes() == before


def test_a_model_moved_aside_by_a_crash_is_named_when_loading(files, tmp_path):
    import shutil

    shutil.copytree(files / "model", tmp_path / ".model.x1y2.old")  # where a crash mid-replacement leaves it
    with pytest.raises(DataError, match=r"\.model\.x1y2\.old holds the model .* Rename it back"):
        FinVAE.load(tmp_path / "model")


def test_command_line_dates_read_as_a_user_means_them():
    import argparse

    from finvae.cli import _date, _end_date

    assert _end_date("2019") == pd.Timestamp("2019-12-31") and _date("2019") == pd.Timestamp("2019-01-01")
    assert _end_date("2019-02") == pd.Timestamp("2019-02-28") and _end_date("2020-2") == pd.Timestamp("2020-02-29")
    assert _end_date("2019-12-31") == pd.Timestamp("2019-12-31")
    assert _date("2024/01/31") == _date("20240131") == pd.Timestamp("2024-01-31")
    assert _date("01.06.2015") == pd.Timestamp("2015-06-01")  # dotted: day first, as the file loader reads them
    assert _date("06/30/2015") == _date("30/06/2015") == pd.Timestamp("2015-06-30")
    for text, message in [("", r"expected a date such as 2024-01-31 .*got ''"), ("03/04/2015", "ambiguous"),
                          ("2015-06-01T00:00:00Z", "without a time zone"), ("Dec 2019", "got 'Dec 2019'"),
                          ("3/4/24", "got '3/4/24'"), ("2019-13", "got '2019-13'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            _date(text)
