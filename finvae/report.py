"""``report.html``: the main job's results in one self-contained HTML file.

:func:`write_report` turns a :class:`~finvae._main_job.MainJobResult` into a
single HTML file that needs nothing else: the figures are embedded as
``data:`` URIs, the style sheet is inline, and nothing is fetched from
elsewhere (no scripts, fonts or links out), so the file can be mailed,
archived, or opened offline. It holds the latest date's score, the backtest
summary, the figures, the flagged dates with the assets that contributed
most, the factor exposures, the run's settings, and the versions of Python
and the packages that produced it. Built with the standard library only;
every piece of text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import platform
import time
from collections.abc import Iterable, Mapping
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from finvae._atomic import write_text

if TYPE_CHECKING:  # _main_job imports this module
    from finvae._main_job import MainJobResult

__all__ = ["REPORT_NAME", "package_versions", "write_report"]

REPORT_NAME = "report.html"

#: Summary measures shown as percentages, here and by ``format_summary``; the others with two decimals.
PERCENT_MEASURES = {"annual return", "volatility", "max drawdown", "days de-risked", "average exposure"}

#: What each figure of the main job shows, by file name; other images get their file name as caption.
CAPTIONS = {
    "scores.png": "The walk-forward score, out of sample, with its threshold and the flagged dates, over the "
                  "equal-weight index.",
    "factors.png": "The latent factors of the reference model (fitted before the first scored date).",
    "equity_drawdowns.png": "Equity curves and drawdowns: the overlay (de-risked after flags), buy and hold, and a "
                            "volatility target at the same average exposure.",
    "asset_contributions.png": "Per-asset contributions (shares of the reference model's residual) on the most "
                               "anomalous scored days.",
}

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d232b;
       margin: 0; background: #f4f5f7; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 4px; }
h2 { font-size: 1.2em; margin: 32px 0 8px; padding-bottom: 4px; border-bottom: 2px solid #e3e6ea; }
p.lead, p.note, figcaption { color: #56606b; }
p.note { font-size: 0.9em; }
nav a { margin-right: 14px; color: #2458a6; text-decoration: none; font-size: 0.95em; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { flex: 1 1 170px; border: 1px solid #e3e6ea; border-radius: 6px; padding: 10px 14px; }
.card .label { font-size: 0.8em; color: #56606b; text-transform: uppercase; letter-spacing: 0.03em; }
.card .value { font-size: 1.2em; font-weight: 600; margin-top: 2px; }
.flagged { color: #b3261e; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e3e6ea; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f4f5f7; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.flag td { background: #fdf0ef; }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
code { background: #f4f5f7; padding: 1px 4px; border-radius: 3px; }
"""


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages behind a run: finvae, torch, numpy, pandas, scikit-learn, matplotlib.

    Returns
    -------
    dict of str to str
        Name → version, ``"not installed"`` for a missing package, and the platform.

    Examples
    --------
    >>> from finvae.report import package_versions
    >>> sorted(package_versions())[:3]
    ['finvae', 'matplotlib', 'numpy']
    """
    from importlib import metadata

    from finvae import __version__

    versions = {"python": platform.python_version(), "finvae": __version__}
    for name in ("torch", "numpy", "pandas", "scikit-learn", "matplotlib"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["platform"] = f"{platform.system()} {platform.machine()}"
    return versions


def write_report(result: MainJobResult, out_dir: str | Path, settings: Mapping[str, object] | None = None, *,
                 contributions: pd.DataFrame | None = None, top: int = 3, max_flags: int = 250) -> Path:
    """Write ``report.html`` for a main-job result into ``out_dir`` and return its path.

    Parameters
    ----------
    result : MainJobResult
        What :func:`finvae._main_job.run_main_job` computed. Its ``files``
        ending in ``.png`` (or ``.svg``, ``.jpg``) are embedded as ``data:``
        URIs, one figure each, in their order.
    out_dir : str or Path
        Folder to write to (it must exist). The file is written to a
        temporary name and then renamed, so a reader never sees half of it.
    settings : mapping, optional
        The run's settings (name → value), shown as a table.
    contributions : DataFrame, optional
        Each asset's share of each date's residual (dates × assets, e.g.
        ``FinVAE.score_assets``); with it, each flagged date lists its ``top``
        assets.
    top : int, default=3
        Assets listed per flagged date.
    max_flags : int, default=250
        Most flagged dates listed (the latest ones); all are in ``flags.csv``.

    Returns
    -------
    Path
        ``out_dir / "report.html"``.

    Examples
    --------
    >>> from finvae._main_job import run_main_job
    >>> result = run_main_job(returns, out_dir="out")   # doctest: +SKIP
    >>> write_report(result, "out", {"window": 20})      # doctest: +SKIP
    PosixPath('out/report.html')
    """
    for name, value in (("top", top), ("max_flags", max_flags)):
        if not isinstance(value, Integral) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0; got {value!r}.")
    top, max_flags = int(top), int(max_flags)  # numpy's unsigned integers would wrap in len(...) - max_flags
    out = Path(out_dir)
    wf = result.walk_forward
    images = [Path(p) for p in result.files if Path(p).suffix.lower() in _MIME]
    sections = [
        ("glance", "At a glance", _glance(result)),
        ("summary", "Backtest summary", _summary_table(result.summary)),
        ("figures", "Figures", _figures(images)),
        ("flags", "Flagged dates", _flags_table(wf, contributions, top, max_flags)),
        ("exposures", "Factor exposures", _exposures_table(result.exposures)),
        ("settings", "Settings", _key_values(settings or {}, "setting")),
        ("versions", "Package versions", _key_values(package_versions(), "package")),
        ("files", "Files in this folder", _files(result.files)),
    ]
    scored = f"{wf.index[0].date()} to {wf.index[-1].date()}" if len(wf) else "no dates"
    assets = result.exposures.index
    body = [
        f"<h1>finvae main job: {_e(scored)}</h1>",
        f'<p class="lead">{len(assets)} assets ({_e(_some(assets))}), {len(wf):,} dates scored out of sample; '
        f"written {_e(time.strftime('%Y-%m-%d %H:%M %Z'))}"
        + (f", in {_duration(result.seconds)}" if np.isfinite(result.seconds) else "") + ".</p>",
        "<nav>" + "".join(f'<a href="#{key}">{_e(title)}</a>' for key, title, _ in sections) + "</nav>",
    ]
    body += [f'<section id="{key}"><h2>{_e(title)}</h2>{content}</section>' for key, title, content in sections]
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>finvae report: {_e(scored)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        "<body>\n<main>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
    return write_text(page, out / REPORT_NAME)


# --------------------------------------------------------------------------- sections


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _some(names: Iterable, limit: int = 8) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _number(value, digits: int = 2) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return _e(value)
    return "–" if not np.isfinite(value) else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
           row_classes: list[str] | None = None) -> str:
    """An HTML table from already-escaped cells; columns in ``numeric`` align right."""
    def cell(tag: str, i: int, text: str) -> str:
        return f'<{tag} class="num">{text}</{tag}>' if i in numeric else f"<{tag}>{text}</{tag}>"

    head = "<tr>" + "".join(cell("th", i, h) for i, h in enumerate(header)) + "</tr>"
    lines = []
    for k, row in enumerate(rows):
        css = f' class="{row_classes[k]}"' if row_classes and row_classes[k] else ""
        lines.append(f"<tr{css}>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>")
    return f"<table>\n<thead>{head}</thead>\n<tbody>\n" + "\n".join(lines) + "\n</tbody>\n</table>"


def _card(label: str, value: str, css: str = "") -> str:
    return (f'<div class="card"><div class="label">{_e(label)}</div>'
            f'<div class="value{" " + css if css else ""}">{value}</div></div>')


def _glance(result: MainJobResult) -> str:
    wf = result.walk_forward
    scored = wf.dropna(subset=["score"])
    if scored.empty:
        return "<p>No date was scored.</p>"
    last_date, last = scored.index[-1], scored.iloc[-1]
    flagged = bool(last["flag"])
    cards = [
        _card("Latest scored date", _e(last_date.date())),
        _card("Its score / threshold", f"{_number(last['score'])} / {_number(last['threshold'])}"),
        _card("Latest date flagged?", "FLAGGED" if flagged else "no", "flagged" if flagged else ""),
        _card("Flagged dates", f"{int(wf['flag'].sum()):,} of {len(wf):,} ({wf['flag'].mean():.1%})"),
    ]
    summary = result.summary
    if {"overlay", "buy & hold"} <= set(summary.columns) and "max drawdown" in summary.index:
        cards.append(_card("Max drawdown: overlay / buy & hold",
                           f"{summary.at['max drawdown', 'overlay']:.1%} / "
                           f"{summary.at['max drawdown', 'buy & hold']:.1%}"))
    return '<div class="cards">' + "".join(cards) + "</div>"


def _summary_table(summary: pd.DataFrame) -> str:
    rows = [[_e(measure)] + [("–" if pd.isna(v) else f"{v:.1%}") if measure in PERCENT_MEASURES else _number(v)
                             for v in values]
            for measure, values in summary.iterrows()]
    table = _table(["measure", *map(_e, summary.columns)], rows, numeric=set(range(1, summary.shape[1] + 1)))
    a = summary.attrs
    note = ""
    if {"start", "end", "cost_bps"} <= a.keys():
        note = (f'<p class="note">Backtest {_e(pd.Timestamp(a["start"]).date())} to '
                f'{_e(pd.Timestamp(a["end"]).date())}, after costs of {float(a["cost_bps"]):g} bps per unit '
                "traded. The overlay holds the equal-weight portfolio and de-risks after each flag; the volatility "
                "target runs at the same average exposure.</p>")
    return table + note


def _figures(images: list[Path]) -> str:
    if not images:
        return '<p class="note">No figures in this run (<code>--no-figures</code>).</p>'
    parts = []
    for path in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        caption = CAPTIONS.get(path.name, path.name)
        parts.append(f'<figure><img src="data:{_MIME[path.suffix.lower()]};base64,{data}" alt="{_e(caption)}">'
                     f"<figcaption>{_e(caption)} <code>{_e(path.name)}</code></figcaption></figure>")
    return "\n".join(parts)


def _top_assets(shares: pd.Series, top: int) -> str:
    shares = shares.dropna()
    shares = shares[shares > 0].sort_values(ascending=False, kind="stable").head(top)
    return "; ".join(f"{name} {value:.2f}" for name, value in shares.items())


def _flags_table(wf: pd.DataFrame, contributions: pd.DataFrame | None, top: int, max_flags: int) -> str:
    flagged = wf.index[wf["flag"].astype(bool)]
    if not len(flagged):
        return "<p>No date was flagged.</p>"
    shown = flagged[len(flagged) - max_flags:] if max_flags else flagged[:0]  # flagged[-0:] would be all of them
    header = ["date", "score", "threshold", "refit date"]
    if contributions is not None:
        header.append(f"top {top} assets (share of the residual)")
    rows = []
    for date in shown[::-1]:  # the latest first
        row = wf.loc[date]
        refit = row.get("refit_date")
        cells = [_e(date.date()), _number(row["score"]), _number(row["threshold"]),
                 _e(pd.Timestamp(refit).date()) if refit is not None and pd.notna(refit) else "–"]
        if contributions is not None:
            cells.append(_e(_top_assets(contributions.loc[date], top)) if date in contributions.index else "–")
        rows.append(cells)
    note = (f'<p class="note">{len(flagged):,} flagged dates'
            + (f"; the latest {len(shown):,} are listed" if len(shown) < len(flagged) else "")
            + ", the latest first; all are in <code>flags.csv</code>. A date is flagged when its score exceeds the "
              "threshold of the model that scored it (refitted on the dates before its block)."
            + (" The assets are those whose returns the reference model's reconstruction missed most that day."
               if contributions is not None else "") + "</p>")
    return note + _table(header, rows, numeric={1, 2})


def _exposures_table(exposures: pd.DataFrame) -> str:
    # Three significant digits: betas of daily returns to unit-scale factors are about 0.01, which two decimals
    # would show as 0.01 or -0.01 for every asset.
    rows = [[_e(asset)] + ["–" if not np.isfinite(v) else f"{v:.3g}" for v in values.astype(float)]
            for asset, values in exposures.iterrows()]
    note = ('<p class="note">Each asset\'s betas to the latent factors and the R² of that regression, over the '
            "scored dates (<code>exposures.csv</code>).</p>")
    if exposures.isna().all().all():
        note += ('<p class="note">None could be estimated: each asset needs about three months of scored dates (60) '
                 "on which it and every factor are observed. Score a longer period.</p>")
    return note + _table(["asset", *map(_e, exposures.columns)], rows, numeric=set(range(1, exposures.shape[1] + 1)))


def _key_values(values: Mapping[str, object], what: str) -> str:
    rows = [[f"<code>{_e(key)}</code>", _e(value)] for key, value in values.items()]
    return _table([what, "value"], rows) if rows else "<p>None recorded.</p>"


def _files(files: Iterable) -> str:
    names = [Path(p).name for p in files] + [REPORT_NAME]
    return "<p>" + ", ".join(f"<code>{_e(name)}</code>" for name in names) + "</p>"


