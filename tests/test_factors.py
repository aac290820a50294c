"""finvae.factors: betas recovered on synthetic data, explained variance against PCA, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.utils.validation import check_is_fitted

from finvae import DataError
from finvae.factors import explained_variance, exposures

SP500 = Path(__file__).resolve().parents[1] / "finvae" / "datasets" / "data" / "sp500_dataset.csv.gz"


def factor_model(n_days=800, n_assets=8, n_factors=2, noise=0.002, seed=0):
    """Returns = alpha + B f + noise, with known betas B (assets × factors)."""
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2010-01-01", periods=n_days)
    f = pd.DataFrame(rng.normal(0, 0.01, (n_days, n_factors)), index=dates,
                     columns=[f"factor_{k}" for k in range(n_factors)])
    betas = pd.DataFrame(rng.normal(1.0, 0.7, (n_assets, n_factors)), index=[f"A{i}" for i in range(n_assets)],
                         columns=f.columns)
    alpha = rng.normal(0, 0.001, n_assets)
    r = pd.DataFrame(alpha + f.to_numpy() @ betas.to_numpy().T + rng.normal(0, noise, (n_days, n_assets)),
                     index=dates, columns=betas.index)
    return r, f, betas


class PerfectReconstructor(BaseEstimator):
    """Reconstructs every return exactly, after a causal warm-up of ``window`` NaN rows."""

    def __init__(self, window=5, latent_dim=2):
        self.window = window
        self.latent_dim = latent_dim

    def fit(self, X, y=None):
        self.last_train_date_ = X.index[-1]
        return self

    def reconstruct(self, X):
        check_is_fitted(self)
        out = X.copy()
        out.iloc[: self.window - 1] = np.nan
        return out


class PCAReconstructor(BaseEstimator):
    """A stand-in for FinVAE's reconstruct: PCA on raw (unstandardised) returns of the training period."""

    def __init__(self, latent_dim=1):
        self.latent_dim = latent_dim

    def fit(self, X, y=None):
        self.pca_ = PCA(self.latent_dim).fit(X.dropna().to_numpy())
        return self

    def reconstruct(self, X):
        values = self.pca_.inverse_transform(self.pca_.transform(X.fillna(0.0).to_numpy()))
        return pd.DataFrame(np.where(X.isna(), np.nan, values), index=X.index, columns=X.columns)


# --------------------------------------------------------------------------------------------------
# exposures
# --------------------------------------------------------------------------------------------------


def test_exposures_recover_known_betas_and_r2():
    r, f, betas = factor_model()
    before_r, before_f = r.copy(), f.copy()
    out = exposures(r, f)
    assert list(out.columns) == ["factor_0", "factor_1", "r2"]
    assert out.index.equals(r.columns)
    np.testing.assert_allclose(out[f.columns], betas, atol=0.03)
    signal = (betas**2).sum(axis=1) * 0.01**2  # var(B f) with independent factors of std 1 %
    np.testing.assert_allclose(out["r2"], signal / (signal + 0.002**2), atol=0.03)
    pd.testing.assert_frame_equal(r, before_r)  # inputs untouched
    pd.testing.assert_frame_equal(f, before_f)


def test_exposures_match_ols_with_intercept():
    r, f, _ = factor_model(n_days=300, n_assets=3, noise=0.02)
    out = exposures(r, f)
    X = np.column_stack([np.ones(len(f)), f])
    for asset in r.columns:
        coef, *_ = np.linalg.lstsq(X, r[asset], rcond=None)
        resid = r[asset] - X @ coef
        r2 = 1 - (resid**2).sum() / ((r[asset] - r[asset].mean()) ** 2).sum()
        np.testing.assert_allclose(out.loc[asset, f.columns], coef[1:], rtol=1e-10)
        assert out.loc[asset, "r2"] == pytest.approx(r2, rel=1e-10)


def test_exposures_inner_join_on_dates():
    r, f, _ = factor_model(n_days=400)
    shifted = f.iloc[50:].copy()  # factors start later and the returns stop earlier
    out = exposures(r.iloc[:350], shifted)
    expected = exposures(r.iloc[50:350], f.iloc[50:350])
    pd.testing.assert_frame_equal(out, expected)


def test_exposures_nan_pairwise_per_asset():
    r, f, betas = factor_model(n_days=600)
    r = r.copy()
    r.iloc[:300, 0] = np.nan  # listed late
    r.iloc[::7, 1] = np.nan  # gaps
    f = f.copy()
    f.iloc[:20] = np.nan  # e.g. FinVAE.transform's warm-up
    out = exposures(r, f)
    np.testing.assert_allclose(out[f.columns], betas, atol=0.05)
    # Asset 0 on its own dates equals a regression on exactly those dates.
    alone = exposures(r.iloc[300:, [0]], f.iloc[300:])
    np.testing.assert_allclose(out.iloc[0], alone.iloc[0], rtol=1e-12)


def test_exposures_too_few_observations_gives_nan_and_warning():
    r, f, _ = factor_model(n_days=200)
    r = r.copy()
    r.iloc[10:, 2] = np.nan
    with pytest.warns(UserWarning, match="fewer than 60 dates"):
        out = exposures(r, f)
    assert out.iloc[2].isna().all()
    assert out.drop(index=r.columns[2]).notna().all().all()


def test_exposures_collinear_factors_warn():
    r, f, _ = factor_model(n_days=200)
    f = f.assign(copy=f["factor_0"] * 2)
    with pytest.warns(UserWarning, match="collinear"):
        out = exposures(r, f)
    assert out.isna().all().all()


def test_exposures_accept_series_and_constant_asset():
    r, f, betas = factor_model(n_days=300, n_factors=1)
    out = exposures(r["A0"], f["factor_0"])
    assert out.loc["A0", "factor_0"] == pytest.approx(betas.loc["A0", "factor_0"], abs=0.05)
    flat = exposures(r.assign(flat=0.001), f)
    assert np.isnan(flat.loc["flat", "r2"]) and flat.loc["flat", "factor_0"] == pytest.approx(0, abs=1e-10)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda r, f: (r, f.set_axis(f.index + pd.Timedelta(days=10000))), "no dates in common"),
        (lambda r, f: (r, f.rename(columns={"factor_0": "r2"})), "reserves"),
        (lambda r, f: (r.assign(name="x"), f), "numeric"),
        (lambda r, f: (pd.concat([r, r.iloc[:1]]), f), "duplicate dates"),
        (lambda r, f: (r.to_numpy(), f), "DataFrame"),
        (lambda r, f: (r.replace(r.iloc[0, 0], np.inf), f), "infinite"),
    ],
)
def test_exposures_errors(make, match):
    r, f, _ = factor_model(n_days=100)
    with pytest.raises(DataError, match=match):
        exposures(*make(r, f))


# --------------------------------------------------------------------------------------------------
# explained_variance
# --------------------------------------------------------------------------------------------------


def test_perfect_reconstruction_explains_everything():
    r, _, _ = factor_model()
    model = PerfectReconstructor(latent_dim=2)
    before = r.copy()
    table = explained_variance(model, r, train_end=r.index[499])
    assert list(table.index) == ["PerfectReconstructor", "PCA"]
    assert list(table.columns) == ["n_factors", "r2_train", "r2_test"]
    assert table.loc["PerfectReconstructor", "r2_test"] == pytest.approx(1.0)
    assert table.loc["PerfectReconstructor", "r2_train"] == pytest.approx(1.0)
    assert table.loc["PCA", "n_factors"] == 2  # from the model's latent_dim
    assert table.attrs["train_end"] == r.index[499] and table.attrs["test_start"] == r.index[500]
    pd.testing.assert_frame_equal(r, before)
    with pytest.raises(Exception, match="not fitted"):  # the caller's model was cloned, not fitted
        check_is_fitted(model)


def test_unfitted_model_is_fitted_on_training_period_only():
    r, _, _ = factor_model()
    seen = []

    class Spy(PerfectReconstructor):
        def fit(self, X, y=None):
            seen.append(X.index[-1])
            return super().fit(X)

    explained_variance(Spy(), r, train_end="2011-06-30")
    assert seen == [r.loc[:"2011-06-30"].index[-1]]
    fitted = Spy().fit(r)  # a fitted model is used as it is
    explained_variance(fitted, r, train_end="2011-06-30")
    assert len(seen) == 2


def test_pca_r2_sane_on_a_factor_model():
    r, _, _ = factor_model(n_days=1000, n_assets=10, n_factors=2, noise=0.01)
    r2 = [explained_variance(None, r, train_end=r.index[599], n_components=k).loc["PCA", "r2_test"]
          for k in (1, 2, 3, 10)]
    assert 0 < r2[0] < r2[1] <= r2[2] < r2[3]
    assert r2[1] > 0.6  # two factors carry most of the variance here
    assert r2[3] == pytest.approx(1.0)  # as many components as assets: exact


def test_model_compared_to_pca_on_the_same_entries():
    r, _, _ = factor_model(n_days=700, n_assets=6)
    r = r.copy()
    r.iloc[650, 3] = np.nan  # a gap in the test period: PCA projects that day on the other assets
    table = explained_variance(PCAReconstructor(latent_dim=2), r, train_end=r.index[399])
    assert table["r2_test"].between(0.5, 1.0).all()
    assert table["n_factors"].tolist() == [2, 2]


def test_default_train_end_is_three_quarters_of_the_dates():
    r, _, _ = factor_model(n_days=400)
    table = explained_variance(None, r, n_components=1)
    assert table.attrs["train_end"] == r.index[299]


def test_sp500_reference_numbers():
    """The issue's PCA figures: 0.39 / 0.46 / 0.57 out of sample with 1 / 2 / 3 factors (train ≤ 2012)."""
    prices = pd.read_csv(SP500, index_col=0, parse_dates=True)
    returns = np.log(prices).diff().iloc[1:]
    r2 = [explained_variance(None, returns, train_end="2012-12-31", n_components=k).loc["PCA", "r2_test"]
          for k in (1, 2, 3)]
    np.testing.assert_allclose(r2, [0.39, 0.46, 0.57], atol=0.005)


def test_explained_variance_errors():
    r, _, _ = factor_model(n_days=200)
    with pytest.raises(ValueError, match="n_components"):
        explained_variance(None, r)
    with pytest.raises(DataError, match="empty training"):
        explained_variance(None, r, train_end="1990-01-01", n_components=1)
    with pytest.raises(DataError, match="empty test"):
        explained_variance(None, r, train_end="2100-01-01", n_components=1)
    with pytest.raises(DataError, match="no variance"):
        explained_variance(None, r.assign(flat=0.0), train_end=r.index[99], n_components=1)
    with pytest.raises(TypeError, match="no reconstruct"):
        explained_variance(PCA(1), r, train_end=r.index[99])
    with pytest.raises(ValueError, match="exceeds"):
        explained_variance(None, r, train_end=r.index[99], n_components=50)


def test_explained_variance_refuses_prices_and_reads_train_end_in_the_returns_zone():
    r, _, _ = factor_model()
    with pytest.raises(DataError, match="returns look like price levels"):
        explained_variance(None, 100.0 * np.exp(r.cumsum()), train_end=r.index[499])
    zoned = r.tz_localize("America/New_York")
    table = explained_variance(None, zoned, train_end=str(r.index[499].date()), n_components=2)
    assert table.attrs["train_end"] == zoned.index[499]
    with pytest.raises(DataError, match=r"train_end='2011-13-45' is not a date"):
        explained_variance(None, r, train_end="2011-13-45", n_components=2)
