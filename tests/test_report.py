"""``report.html``: one self-contained file that parses, embeds every figure and fetches nothing."""

from __future__ import annotations

import base64
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from finvae._main_job import MainJobResult, run_main_job
from finvae.backtest import anomaly_overlay
from finvae.datasets import load_sp500_sample, prices_to_returns
from finvae.report import REPORT_NAME, write_report

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(HTMLParser):
    """Collects the tags, the links out and the text, and checks that every element is closed in order."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.open: list[str] = []
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.style = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        for name in ("src", "href", "srcset", "poster", "data", "action"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name] or "")
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.open.pop()

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data):
        if self.open and self.open[-1] == "style":
            self.style += data
        else:
            self.text.append(data)


def _parse(path) -> _Page:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page = _Page()
    page.feed(text)
    page.close()
    assert page.open == [], f"unclosed elements: {page.open}"
    return page


def _assert_self_contained(page: _Page) -> None:
    assert not {"script", "link", "iframe", "object", "embed", "base"} & set(page.tags)
    assert all(link.startswith("#") for link in page.links), page.links  # in-page anchors only
    assert all(src.startswith("data:image/") for src in page.images), [s[:40] for s in page.images]
    assert "url(" not in page.style and "@import" not in page.style


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    returns = prices_to_returns(load_sp500_sample().loc["1997":"2001", ["AAPL", "JPM", "XOM", "KO"]])
    out = tmp_path_factory.mktemp("job")
    result = run_main_job(returns, out_dir=out, start="2000-01-01", min_train=500, latent_dim=2, epochs=2,
                          refit_every=400, n_jobs=1, random_state=0, verbose=0)
    return result, out


def test_the_run_writes_a_report_that_embeds_every_figure(job):
    result, out = job
    assert result.files[-1] == out / REPORT_NAME
    page = _parse(out / REPORT_NAME)
    _assert_self_contained(page)
    figures = [path for path in result.files if path.suffix == ".png"]
    assert len(figures) == 4 and len(page.images) == len(figures)
    for src, path in zip(page.images, figures, strict=True):  # each figure, byte for byte, in order
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")) == path.read_bytes()


def test_the_results_print_as_a_summary_not_their_data(job):
    result, out = job
    text = repr(result)
    flags = int(result.walk_forward["flag"].sum())
    assert "\n" not in text and len(text) < 400
    assert f"{len(result.walk_forward):,} dates scored out of sample, {flags:,} flagged" in text
    assert f"{flags:,} flags" in repr(result.overlay) and "max drawdown" in repr(result.overlay)
    numbered = MainJobResult(walk_forward=result.walk_forward.reset_index(drop=True), factors=result.factors,
                             exposures=result.exposures, overlay=result.overlay, summary=result.summary, model=None)
    assert repr(numbered).startswith("MainJobResult(0 to ")  # a non-date index prints as it is


def test_the_report_holds_the_tables_settings_and_versions(job):
    result, out = job
    text = " ".join(_parse(out / REPORT_NAME).text)
    for heading in ("Backtest summary", "Flagged dates", "Factor exposures", "Settings", "Package versions"):
        assert heading in text
    for measure in result.summary.index:
        assert measure in text
    for asset in result.exposures.index:
        assert asset in text
    for name in ("python", "finvae", "torch", "numpy", "pandas", "scikit-learn", "refit_every", "vol_halflife"):
        assert name in text
    assert "(5, 60)" in text  # the half-lives used, not "None" for the default
    flagged = result.walk_forward.index[result.walk_forward["flag"]]
    assert len(flagged) and all(str(date.date()) in text for date in flagged)


def _small_result(tmp_path, names, n_figures: int, flags: int) -> MainJobResult:
    index = pd.bdate_range("2021-01-04", periods=60, name="Date")
    rng = np.random.default_rng(0)
    returns = pd.DataFrame(rng.normal(0, 0.01, (60, len(names))), index=index, columns=names)
    flag = pd.Series(False, index=index)
    flag.iloc[5 : 5 + flags] = True
    wf = pd.DataFrame({"score": rng.uniform(0, 5, 60), "flag": flag, "threshold": 4.0, "refit_date": index[0]},
                      index=index)
    overlay = anomaly_overlay(returns, flag)
    files = []
    for k in range(n_figures):  # tiny stand-in images
        path = tmp_path / f"figure{k}.png"
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes([k]) * 20)
        files.append(path)
    exposures = pd.DataFrame({"factor_0": np.ones(len(names)), "r2": 0.5}, index=pd.Index(names, name="asset"))
    return MainJobResult(walk_forward=wf, factors=pd.DataFrame(index=index), exposures=exposures, overlay=overlay,
                         summary=overlay.summary(), model=None, files=files)


def test_text_is_escaped_and_long_flag_lists_are_cut(tmp_path):
    names = ["<script>alert(1)</script>", "A&B", 'Q"T']
    result = _small_result(tmp_path, names, n_figures=2, flags=30)
    shares = pd.DataFrame(1 / 3, index=result.walk_forward.index, columns=names)
    path = write_report(result, tmp_path, {"note": "<b>bold</b>"}, contributions=shares, max_flags=10)
    page = _parse(path)
    _assert_self_contained(page)
    assert len(page.images) == 2
    text = " ".join(page.text)
    assert "<script>alert(1)</script>" in text and "A&B" in text and "<b>bold</b>" in text  # shown as text
    assert "30 flagged dates; the latest 10 are listed" in text
    assert sum(str(date.date()) in text for date in result.walk_forward.index[5:35]) == 10


def test_no_figures_and_no_flags(tmp_path):
    result = _small_result(tmp_path, ["A", "B"], n_figures=0, flags=0)
    page = _parse(write_report(result, tmp_path))
    _assert_self_contained(page)
    text = " ".join(page.text)
    assert page.images == [] and "No figures in this run" in text and "No date was flagged" in text
    assert "None could be estimated" not in text


def test_max_flags_zero_lists_none_and_unestimated_exposures_say_why(tmp_path):
    result = _small_result(tmp_path, ["A", "B"], n_figures=0, flags=5)
    result.exposures.loc[:, :] = np.nan
    text = " ".join(_parse(write_report(result, tmp_path, max_flags=0)).text)
    assert "5 flagged dates; the latest 0 are listed" in text
    assert not any(str(date.date()) in text for date in result.walk_forward.index[5:10])
    assert "None could be estimated" in text
    with pytest.raises(ValueError, match="max_flags must be an integer >= 0"):
        write_report(result, tmp_path, max_flags=-1)
    text = " ".join(_parse(write_report(result, tmp_path, max_flags=np.uint64(2))).text)
    assert "5 flagged dates; the latest 2 are listed" in text  # numpy's unsigned integers do not wrap around
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_main_job_leaves_the_caller_s_matplotlib_backend(tmp_path, monkeypatch):
    import matplotlib

    def switch(*args, **kwargs):
        raise AssertionError("run_main_job switched the backend: a notebook would lose its inline figures")

    monkeypatch.setattr(matplotlib, "use", switch)
    open_before = matplotlib.pyplot.get_fignums()  # other tests' figures, if any
    returns = prices_to_returns(load_sp500_sample().loc["1999":"2001", ["AAPL", "JPM", "XOM"]])
    result = run_main_job(returns, out_dir=tmp_path, start="2001-06-01", min_train=400, latent_dim=2, epochs=1,
                          refit_every=400, n_jobs=1, random_state=0, verbose=0)
    assert sum(path.suffix == ".png" for path in result.files) == 4
    assert matplotlib.pyplot.get_fignums() == open_before  # every figure drawn was closed


def test_small_factor_betas_keep_three_significant_digits(tmp_path):
    result = _small_result(tmp_path, ["A", "B"], n_figures=0, flags=0)
    result.exposures["factor_0"] = [0.0123, -0.00456]  # betas of daily returns to unit-scale factors
    text = " ".join(_parse(write_report(result, tmp_path)).text)
    assert "0.0123" in text and "-0.00456" in text
