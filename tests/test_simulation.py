"""finvae.simulation: FinVAE.sample with dynamics and FinVAE.simulate, on a tiny market with a stormy stretch."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from finvae import DataError, FinVAE
from finvae.concepts import stress_scenarios
from finvae.simulation import Dynamics, _states, fit_dynamics, state_at

WINDOW = 5
STORM = (300, 340)  # rows whose volatility is four times the rest


def market(n_days=420, n_assets=4, seed=0):
    """One-factor returns (Student-t days) whose volatility is four times higher on the STORM rows."""
    rng = np.random.default_rng(seed)
    vol = np.full(n_days, 0.01)
    vol[slice(*STORM)] = 0.04
    factor = vol * rng.standard_t(5, n_days)
    beta = np.linspace(0.5, 1.5, n_assets)
    values = factor[:, None] * beta + 0.5 * vol[:, None] * rng.standard_normal((n_days, n_assets))
    return pd.DataFrame(values, index=pd.bdate_range("2015-01-01", periods=n_days),
                        columns=[f"A{i}" for i in range(n_assets)])


@pytest.fixture(scope="module")
def fitted():
    returns = market()
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=8, epochs=3, random_state=0, verbose=0).fit(returns)
    return model, returns, fit_dynamics(model, returns)


def test_simulate_shapes_and_seeds(fitted):
    model, returns, dynamics = fitted
    paths = model.simulate(returns, horizon=7, n_paths=30, random_state=1)
    assert paths.shape == (30, 7, 4) and paths.dtype == np.float32
    assert np.isfinite(paths).all()
    np.testing.assert_array_equal(paths, model.simulate(returns, horizon=7, n_paths=30, random_state=1))
    assert not np.allclose(paths, model.simulate(returns, horizon=7, n_paths=30, random_state=2))
    # dynamics learned once give the same paths as learning them in the call
    np.testing.assert_array_equal(paths, model.simulate(returns, 7, 30, 1, dynamics=dynamics))


def test_sample_with_dynamics_shapes_seeds_and_static_fallback(fitted):
    model, returns, dynamics = fitted
    windows = model.sample(40, random_state=0, returns=returns)
    assert windows.shape == (40, WINDOW, 4) and windows.dtype == np.float64
    np.testing.assert_array_equal(windows, model.sample(40, random_state=0, dynamics=dynamics))
    assert not np.allclose(windows, model.sample(40, random_state=1, dynamics=dynamics))
    static = model.sample(40, random_state=0, dynamics=False)  # the static prior, as before
    assert static.shape == windows.shape and not np.allclose(static, windows)
    with pytest.raises(DataError, match="static prior only"):
        model.sample(3, returns=returns, volatility=np.ones(4))


def test_dynamics_are_learned_at_fit_and_saved(fitted, tmp_path):
    model, returns, dynamics = fitted
    # sample(n) draws from the dynamics learned on the training returns, without being given them
    np.testing.assert_array_equal(model.sample(25, random_state=3), model.sample(25, random_state=3, dynamics=dynamics))
    np.testing.assert_array_equal(model.dynamics_.residuals, dynamics.residuals)
    loaded = FinVAE.load(model.save(tmp_path / "model"))
    assert loaded.dynamics_.dates.equals(dynamics.dates)
    np.testing.assert_array_equal(loaded.sample(25, random_state=3), model.sample(25, random_state=3))
    np.testing.assert_array_equal(loaded.simulate(returns, 5, 10, 0), model.simulate(returns, 5, 10, 0))
    with pytest.raises(DataError, match="dynamics=False"):
        model.sample(3, volatility=np.ones(4))


def test_a_model_too_short_for_dynamics_says_so():
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=8, epochs=1, random_state=0, verbose=0).fit(market(8))
    assert model.dynamics_ is None
    with pytest.raises(DataError, match="no dynamics"):
        model.sample(3)
    assert model.sample(3, random_state=0, dynamics=False).shape == (3, WINDOW, 4)


def test_a_stormy_date_gives_wider_paths_than_a_calm_one(fitted):
    model, returns, dynamics = fitted
    calm = model.simulate(returns.iloc[:250], horizon=10, n_paths=400, random_state=0, dynamics=dynamics)
    stormy = model.simulate(returns.iloc[: STORM[0] + 30], horizon=10, n_paths=400, random_state=0,
                            dynamics=dynamics)
    ratio = stormy.std(axis=0).mean() / calm.std(axis=0).mean()
    assert ratio > 2.5  # the storm's volatility is 4x
    # and the calm paths' spread is that of the calm days
    assert calm[:, 0].std(axis=0).mean() == pytest.approx(returns.iloc[:250].std().mean(), rel=0.5)


def test_sampled_windows_spread_over_volatility_regimes(fitted):
    model, returns, dynamics = fitted
    vols = model.sample(600, random_state=0, dynamics=dynamics).std(axis=1).mean(axis=1)
    # about a tenth of the history is stormy: some windows must be several times as volatile as the median one
    assert np.quantile(vols, 0.97) > 2.5 * np.median(vols)
    static = model.sample(600, random_state=0, dynamics=False).std(axis=1).mean(axis=1)
    assert np.quantile(static, 0.97) < 2.0 * np.median(static)


def test_long_paths_stay_stationary(fitted):
    model, returns, dynamics = fitted
    paths = model.simulate(returns, horizon=1500, n_paths=20, random_state=0, dynamics=dynamics)
    late = paths[:, -500:].std(axis=(0, 1))
    # the slowest EWMA leg reverts to the training variance: no drift to zero or to infinity
    assert np.all(late > model.scale_ / 3) and np.all(late < model.scale_ * 3)


def test_state_uses_no_data_after_its_date(fitted):
    model, returns, dynamics = fitted
    t = 280
    changed = returns.copy()
    changed.iloc[t + 1 :] *= -5.0  # rewrite the future
    for frame in (returns, changed):
        ends, codes, _, variances, dates, _ = _states(model, frame)
        i = int(np.flatnonzero(dates == returns.index[t])[0])
        code, var = state_at(model, returns.iloc[: t + 1])
        np.testing.assert_allclose(codes[i], code, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(variances[:, i], var, rtol=1e-5)
    a = model.simulate(returns.iloc[: t + 1], 5, 20, 0, dynamics=dynamics)
    b = model.simulate(changed.iloc[: t + 1], 5, 20, 0, dynamics=dynamics)
    np.testing.assert_array_equal(a, b)


def test_fit_dynamics_learns_a_stationary_var_from_the_codes(fitted):
    model, returns, dynamics = fitted
    assert isinstance(dynamics, Dynamics)
    assert np.abs(np.linalg.eigvals(dynamics.transition)).max() <= 0.99 + 1e-9
    assert dynamics.residuals.shape == (len(dynamics.innovations), 4)
    assert dynamics.variances.shape[0] == 2 and dynamics.variances.shape[1:] == (len(dynamics.codes), 4)
    assert "pool of" in repr(dynamics)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, r: m.simulate(r, horizon=0), "horizon"),
        (lambda m, r: m.simulate(r, n_paths=0), "n_paths"),
        (lambda m, r: m.simulate(r, horizon=2.5), "horizon"),
        (lambda m, r: m.simulate(r.rename(columns={"A0": "B0"})), "assets differ"),
        (lambda m, r: m.simulate(r.iloc[:, :3]), "assets differ"),
        (lambda m, r: m.simulate(r.iloc[: WINDOW - 1]), "fewer than|rows"),
        (lambda m, r: fit_dynamics(m, r.iloc[: WINDOW + 1]), "longer history"),
        (lambda m, r: m.simulate(r, shift=[1.0, 2.0, 3.0]), "shift"),
        (lambda m, r: m.sample(0, returns=r), "n must"),
        (lambda m, r: m.simulate(r, dynamics=False), "dynamics must be a finvae.simulation.Dynamics"),
        (lambda m, r: m.sample(2, dynamics="yes"), "dynamics must be a finvae.simulation.Dynamics"),
        (lambda m, r: m.sample(2, dynamics=dataclasses.replace(m.dynamics_, residuals=m.dynamics_.residuals[:, :3])),
         "learned for another model .* 3 assets"),
    ],
)
def test_bad_input_is_named(fitted, call, message):
    model, returns, _ = fitted
    with pytest.raises(DataError, match=message):
        call(model, returns)


def test_simulate_does_not_modify_the_input(fitted):
    model, returns, _ = fitted
    before = returns.copy()
    model.simulate(returns, 3, 5, 0)
    pd.testing.assert_frame_equal(returns, before)


def test_simulated_stress_scenarios_are_distributions_that_move_with_the_strength(fitted):
    model, returns, dynamics = fitted
    # The code direction that lowers the equal-weight portfolio's first simulated day most, in today's volatility.
    loadings = model.model_.decoder.loadings.weight.detach().numpy().astype(float)
    down = -loadings.T @ model.volatility(returns).iloc[-1].to_numpy()
    down /= np.linalg.norm(down)
    result = stress_scenarios(model, returns, down, strengths=(0, 2), n_paths=300, random_state=0,
                              dynamics=dynamics)
    assert result.paths.shape == (2, 300, WINDOW)
    assert list(result.quantiles.index) == [0.0, 2.0] and 0.05 in result.quantiles.columns
    q = result.quantiles
    assert (np.diff(q.to_numpy(), axis=1) >= 0).all()  # quantiles in order
    # The same draws for every strength: day 1 differs by the shift only, and pushed down the vector it falls.
    first = result.windows.query("day == 1").groupby("strength")["return"].mean()
    assert first.loc[2.0] < first.loc[0.0]
    assert (result.paths[1, :, 0] < result.paths[0, :, 0]).mean() > 0.9
    np.testing.assert_allclose(result.pnl["portfolio"], q[0.5])
    again = stress_scenarios(model, returns, down, strengths=(0, 2), n_paths=300, random_state=0, dynamics=dynamics)
    pd.testing.assert_frame_equal(again.quantiles, q)
    assert result.windows.shape[0] == 2 * WINDOW * 4 and result.windows["date"].min() > returns.index[-1]
    assert "simulated paths" in repr(result)
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    fig = result.plot()
    assert len(fig.axes) == 2
    assert f"5 % {q.loc[2.0, 0.05]:+.1%}" in fig.axes[1].get_title()
    matplotlib.pyplot.close(fig)
    tails = stress_scenarios(model, returns, down, strengths=(0, 2), n_paths=300, random_state=0, dynamics=dynamics,
                             quantiles=(0.01, 0.99))  # without the 5 % and the median that the titles show
    matplotlib.pyplot.close(tails.plot())
    one_day = stress_scenarios(model, returns, down, strengths=(0, 2), n_paths=300, random_state=0,
                               dynamics=dynamics, horizon=1)
    median = one_day.plot().axes[1].get_lines()[0]
    assert list(median.get_xdata()) == [0, 1] and median.get_ydata()[0] == 0  # a one-day horizon draws from day 0
    own, mine = matplotlib.pyplot.subplots(1, 2)
    own.suptitle("my dashboard")
    assert result.plot(axes=mine) is own and own._suptitle.get_text() == "my dashboard"  # the caller's title stays
    matplotlib.pyplot.close("all")


def test_simulate_memory_stays_near_the_output():
    # 2,000 paths x 20 days x 100 assets: the float32 output is 16 MB; temporaries add a few (paths, assets) arrays.
    import tracemalloc

    returns = market(n_days=300, n_assets=100, seed=1)
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=4, epochs=1, random_state=0, verbose=0).fit(returns)
    dynamics = fit_dynamics(model, returns)
    tracemalloc.start()
    paths = model.simulate(returns, horizon=20, n_paths=2000, random_state=0, dynamics=dynamics)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1.5 * paths.nbytes + 10e6


def test_dynamics_that_blow_up_are_an_error_not_nan_paths(fitted):
    model, returns, dynamics = fitted
    exploding = dataclasses.replace(dynamics, transition=1e3 * np.eye(len(dynamics.intercept)))
    with pytest.raises(DataError, match="simulated returns overflowed.*transition norm 1e\\+03"):
        model.simulate(returns, horizon=200, n_paths=5, random_state=0, dynamics=exploding)


def test_the_static_prior_of_an_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    from finvae.simulation import sample_static

    with pytest.raises(NotFittedError):
        sample_static(FinVAE(), 3)


def test_no_simulated_day_moves_an_asset_beyond_clip_training_volatilities(fitted):
    """A calm day's huge surprise replayed in a storm gave daily log returns of 10 and more."""
    model, returns, dynamics = fitted
    wild = dynamics.residuals.copy()
    wild[::7] = 200.0  # surprises far beyond anything real, on one pool day in seven
    paths = model.simulate(returns, horizon=60, n_paths=200, random_state=0,
                           dynamics=dataclasses.replace(dynamics, residuals=wild))
    largest = model.model_.clip * model.scale_
    assert np.isfinite(paths).all()
    assert (np.abs(paths - model.mean_) <= largest * (1 + 1e-5)).all()
    assert (np.abs(paths - model.mean_) > 0.99 * largest).any()  # reached: the bound is what holds them


def test_a_late_listing_keeps_its_own_moves_in_simulated_paths():
    returns = market(n_days=420)
    late = returns.copy()
    late.iloc[:250, 0] = np.nan  # A0 lists on row 250
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=8, epochs=3, random_state=0, verbose=0).fit(late)
    pool = model.dynamics_.residuals[:, 0]
    _, counts = np.unique(pool, return_counts=True)
    assert counts.max() < 0.05 * len(pool)  # before: one constant (the zero of a missing day) on most pool days
    assert np.isfinite(pool).all()
    simulated = model.simulate(late, horizon=100, n_paths=300, random_state=0)[:, :, 0].std()
    real = late.iloc[250:, 0].std()
    assert 0.5 * real < simulated < 2.0 * real


def test_an_asset_never_observed_in_the_history_does_not_drift():
    returns = market(n_days=420)
    late = returns.copy()
    late.iloc[:300, 3] = np.nan  # A3 lists on row 300
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=8, epochs=3, random_state=0, verbose=0).fit(late)
    before = late.iloc[:250]  # a history that ends before the listing: A3 has no day in its pool
    paths = model.simulate(before, horizon=50, n_paths=400, random_state=0, dynamics=fit_dynamics(model, before))
    drift = (paths[:, :, 3] - model.mean_[3]).mean()
    assert abs(drift) < 0.1 * paths[:, :, 3].std()  # centred, as the other assets are
