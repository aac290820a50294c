"""finvae.concepts: concept vectors against noise, scenarios against the reconstruction, stylized facts by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finvae import DataError, FinVAE
from finvae.concepts import (
    ConceptVector,
    concept_vector,
    latent_concept,
    return_windows,
    shift_codes,
    stress_scenarios,
    stylized_facts,
)

WINDOW = 5


def market(n_days=400, n_assets=4, seed=0, crash=None):
    """One-factor returns; ``crash`` = (start, stop) rows of a planted selloff: a common -3 % a day."""
    rng = np.random.default_rng(seed)
    factor = rng.normal(0, 0.01, n_days)
    if crash is not None:
        factor[slice(*crash)] -= 0.03
    beta = np.linspace(0.5, 1.5, n_assets)
    values = factor[:, None] * beta + rng.normal(0, 0.005, (n_days, n_assets))
    return pd.DataFrame(values, index=pd.bdate_range("2015-01-01", periods=n_days),
                        columns=[f"A{i}" for i in range(n_assets)])


@pytest.fixture(scope="module")
def fitted():
    returns = market(crash=(200, 230))
    model = FinVAE(window=WINDOW, latent_dim=2, hidden=8, epochs=5, random_state=0, verbose=0).fit(returns)
    return model, returns


# ------------------------------------------------------------------ concept vectors


def test_mask_against_an_identical_copy_of_itself_is_exactly_zero():
    # The codes where the mask holds and where it does not are the same codes: the vector must vanish.
    codes = np.random.default_rng(0).normal(size=(300, 3))
    result = latent_concept(np.vstack([codes, codes]), np.r_[np.ones(300, bool), np.zeros(300, bool)],
                            n_boot=50, random_state=0)
    np.testing.assert_allclose(result.vector, 0.0, atol=1e-12)
    assert result.norm < 1e-12
    assert not result.significant and result.p_value == 1.0


def test_random_half_of_homogeneous_codes_is_noise_but_a_planted_shift_is_found():
    rng = np.random.default_rng(1)
    codes = rng.normal(size=(2000, 3))
    half = rng.permutation(np.arange(2000) < 1000)
    noise = latent_concept(codes, half, n_boot=200, random_state=0)
    # Each component's standard error is sqrt(2 / 1000) = 0.045.
    assert noise.norm < 0.2 and not noise.significant
    assert ((noise.interval["lower"] < 0) & (noise.interval["upper"] > 0)).iloc[:3].all()

    shifted = codes + np.where(half[:, None], [0.5, 0.0, 0.0], 0.0)
    found = latent_concept(shifted, half, n_boot=200, random_state=0)
    assert found.significant and found.p_value < 0.01
    assert found.interval.loc["factor_0", "lower"] < 0.5 < found.interval.loc["factor_0", "upper"]
    assert found.vector.iloc[0] == pytest.approx(0.5, abs=0.15)


def test_concept_vector_of_a_planted_crash_beats_a_random_split_of_dates(fitted):
    model, returns = fitted
    crash = pd.Series(False, index=returns.index)
    crash.iloc[200:230] = True
    found = concept_vector(model, returns, crash, n_boot=100, random_state=0)
    assert isinstance(found, ConceptVector) and list(found.vector.index) == ["factor_0", "factor_1"]
    assert found.n_in == 30 and found.n_in + found.n_out == returns.shape[0] - (WINDOW - 1)
    assert found.significant

    random_split = np.random.default_rng(0).random(len(returns)) < 0.5
    noise = concept_vector(model, returns, random_split, n_boot=100, random_state=0)
    assert not noise.significant
    assert found.norm > 3 * noise.norm
    text = repr(found)
    assert "norm" in text and "a real direction" in text


def test_concept_vector_is_seeded_and_does_not_modify_inputs(fitted):
    model, returns = fitted
    before = returns.copy()
    mask = pd.Series(returns.index >= returns.index[300], index=returns.index)
    a = concept_vector(model, returns, mask, n_boot=30, random_state=3)
    b = concept_vector(model, returns, mask, n_boot=30, random_state=3)
    pd.testing.assert_frame_equal(a.interval, b.interval)
    np.testing.assert_array_equal(a.null_norms, b.null_norms)
    pd.testing.assert_frame_equal(returns, before)


@pytest.mark.parametrize(
    ("make_mask", "message"),
    [
        (lambda r: pd.Series(True, index=r.index[10:]), "not aligned"),
        (lambda r: np.ones(len(r), bool), "True on all"),
        (lambda r: np.zeros(len(r), bool), "False on all"),
        # True only on dates without a code (the first window - 1): all False where codes exist.
        (lambda r: np.arange(len(r)) < WINDOW - 1, "False on all"),
        (lambda r: np.ones(len(r)), "must be boolean"),
        (lambda r: np.ones(len(r) - 1, bool), "expected"),
    ],
)
def test_concept_vector_rejects_bad_masks(fitted, make_mask, message):
    model, returns = fitted
    with pytest.raises(DataError, match=message):
        concept_vector(model, returns, make_mask(returns), n_boot=5)


def test_shift_codes_moves_each_code_by_strength_times_vector():
    moved = shift_codes(np.zeros((4, 2)), [1.0, -2.0], strengths=[0, 1, 3])
    assert moved.shape == (3, 4, 2)
    np.testing.assert_array_equal(moved[2], np.tile([3.0, -6.0], (4, 1)))
    with pytest.raises(DataError, match="shape"):
        shift_codes(np.zeros((4, 2)), [1.0, 2.0, 3.0], strengths=[1])


# ------------------------------------------------------------------ stress scenarios


def test_strength_zero_reproduces_the_plain_reconstruction(fitted):
    model, returns = fitted
    at = returns.index[250]
    window_dates = returns.index[246:251]
    vector = np.array([1.0, -0.5])

    daily = stress_scenarios(model, returns, vector, strengths=(0, 2), at=at, units="daily")
    zero = daily.windows.query("strength == 0").pivot(index="date", columns="asset", values="return")
    pd.testing.assert_frame_equal(zero, model.reconstruct(returns).loc[window_dates], check_names=False,
                                  check_freq=False, rtol=1e-10, atol=1e-12)

    # Default units: the decoder's returns in the trailing volatility known on `at`, for codes + s * vector.
    scenarios = stress_scenarios(model, returns, vector, strengths=(0, 2), at=at)
    codes = model.encode(returns)[0].loc[window_dates].to_numpy()
    sigma = model.volatility(returns).loc[at].to_numpy()
    for s in (0, 2):
        got = scenarios.windows.query("strength == @s")["return"].to_numpy().reshape(WINDOW, -1)
        np.testing.assert_allclose(got, model.decode(codes + s * vector, volatility=sigma), rtol=1e-10)
    assert not np.allclose(scenarios.pnl.loc[0.0], scenarios.pnl.loc[2.0])

    # Later rows do not change the scenario: the model is causal.
    later = stress_scenarios(model, returns.iloc[:251], vector, strengths=(0, 2), at=at)
    pd.testing.assert_frame_equal(later.pnl, scenarios.pnl)


def test_scenario_pnl_compounds_log_returns_and_weights_the_portfolio(fitted):
    model, returns = fitted
    weights = pd.Series([3.0, 1.0, 0.0, 0.0], index=returns.columns[::-1][[3, 2, 1, 0]])  # A0..A3, given by name
    result = stress_scenarios(model, returns, [0.5, 0.5], strengths=(1,), at=returns.index[-1], weights=weights)
    tidy = result.windows
    assert list(tidy.columns) == ["strength", "day", "date", "asset", "return"]
    assert len(tidy) == WINDOW * returns.shape[1] and tidy["day"].max() == WINDOW
    growth = np.exp(tidy.groupby("asset")["return"].sum())
    np.testing.assert_allclose(result.pnl.loc[1.0, growth.index], growth - 1)
    expected = 0.75 * (growth["A0"] - 1) + 0.25 * (growth["A1"] - 1)
    assert result.pnl.loc[1.0, "portfolio"] == pytest.approx(expected)
    cumulative = result.cumulative()
    np.testing.assert_allclose(cumulative.xs(1.0, level="strength").iloc[-1], result.pnl.loc[1.0])
    fig = result.plot()
    assert len(fig.axes) == 1


def test_stress_scenarios_reject_bad_input(fitted):
    model, returns = fitted
    with pytest.raises(DataError, match="before the first full window"):
        stress_scenarios(model, returns, [1.0, 0.0], at=returns.index[2 * (WINDOW - 1) - 1])
    stress_scenarios(model, returns, [1.0, 0.0], at=returns.index[2 * (WINDOW - 1)])  # the first possible date
    with pytest.raises(DataError, match="not a date of returns"):
        stress_scenarios(model, returns, [1.0, 0.0], at="2015-01-03")  # a Saturday
    with pytest.raises(DataError, match="vector has shape"):
        stress_scenarios(model, returns, [1.0, 0.0, 0.0])
    with pytest.raises(DataError, match="weights"):
        stress_scenarios(model, returns, [1.0, 0.0], weights=pd.Series(1.0, index=["A0", "X"]))
    with pytest.raises(DataError, match="DataFrame"):
        stress_scenarios(model, returns.to_numpy(), [1.0, 0.0])
    # NaN strengths or vectors gave a portfolio P&L of exactly 0 %, or a misleading overflow with n_paths.
    for n_paths in (None, 50):
        for strengths, message in [((0, np.nan), "strengths must be finite"), ((), "non-empty sequence"),
                                   ([[1, 2]], "non-empty sequence"), (("a",), "strengths must be numbers")]:
            with pytest.raises(DataError, match=message):
                stress_scenarios(model, returns, [1.0, 0.0], strengths, n_paths=n_paths, random_state=0)
        with pytest.raises(DataError, match="vector holds NaN"):
            stress_scenarios(model, returns, [np.nan, 0.0], (1,), n_paths=n_paths, random_state=0)
    for ignored in ({"units": "daily"}, {"volatility": np.full(returns.shape[1], 0.01)}):  # they were ignored
        with pytest.raises(DataError, match="simulated scenarios .* drive their own volatility"):
            stress_scenarios(model, returns, [1.0, 0.0], (1,), n_paths=50, random_state=0, **ignored)
    as_text = returns.set_axis(returns.index.strftime("%m/%d/%Y"))  # read_csv without parse_dates
    for call in (lambda: stress_scenarios(model, as_text, [1.0, 0.0]),
                 lambda: concept_vector(model, as_text, np.ones(len(as_text), bool))):
        with pytest.raises(DataError, match=r"text as its index, such as '01/"):
            call()


def test_stress_scenarios_read_a_plain_at_in_the_returns_time_zone(fitted):
    model, returns = fitted
    at = returns.index[300]
    plain = stress_scenarios(model, returns, [1.0, 0.0], at=str(at.date()))
    zoned = stress_scenarios(model, returns.tz_localize("UTC"), [1.0, 0.0], at=str(at.date()))
    np.testing.assert_array_equal(zoned.pnl.to_numpy(), plain.pnl.to_numpy())
    with pytest.raises(DataError, match=r"at=.* 16:00:00 is not a date of returns. The last date before it is"):
        stress_scenarios(model, returns, [1.0, 0.0], at=f"{at.date()} 16:00")


# ------------------------------------------------------------------ sampling and stylized facts


def test_sampling_is_seeded(fitted):
    model, _ = fitted
    np.testing.assert_array_equal(model.sample(3, random_state=0), model.sample(3, random_state=0))
    assert not np.allclose(model.sample(3, random_state=0), model.sample(3, random_state=1))
    assert model.sample(3, random_state=0).shape == (3, WINDOW, 4)
    for dynamics in (None, False):  # a numpy Generator seeds both priors
        first = model.sample(3, random_state=np.random.default_rng(0), dynamics=dynamics)
        np.testing.assert_array_equal(first, model.sample(3, random_state=np.random.default_rng(0), dynamics=dynamics))
    with pytest.raises(DataError, match="random_state must be None, an int"):
        model.sample(3, random_state="x", dynamics=False)
    for dynamics in (None, False):  # unseeded: two calls draw different windows
        assert not np.allclose(model.sample(3, dynamics=dynamics), model.sample(3, dynamics=dynamics))


def test_stylized_facts_match_hand_computed_values():
    # Two windows of four days, two assets. Real: asset 1 = -asset 0; synthetic: asset 1 = asset 0.
    real0 = np.array([[1, -1, 1, -1], [2, -2, 2, -2]], float)
    syn0 = np.array([[1, -1, 2, -2], [2, -2, 1, -1]], float)
    real = np.stack([real0, -real0], axis=-1)
    synthetic = np.stack([syn0, syn0], axis=-1)
    facts = stylized_facts(real, synthetic, lags=[1, 2, 3], quantiles=[0.25], cv=0).set_index("fact")

    # Both pool {±1, ±1, ±2, ±2}: m2 = 2.5, m4 = 8.5, excess kurtosis 8.5 / 2.5² - 3 = -1.64.
    assert facts.loc["excess kurtosis", "real"] == pytest.approx(-1.64)
    assert facts.loc["excess kurtosis", "synthetic"] == pytest.approx(-1.64)
    # Sorted -2 -2 -1 -1 1 1 2 2: the 0.25 quantile lies 0.75 of the way from -2 to -1.
    assert facts.loc["quantile 0.25", "real"] == pytest.approx(-1.25)
    # |r| within windows. Real: 1 1 1 1 | 2 2 2 2, every pair equal: correlation 1 at each lag.
    # Synthetic: 1 1 2 2 | 2 2 1 1; lag 1 pairs (1,1) (1,2) (2,2) (2,2) (2,1) (1,1): 0.5 / 1.5 = 1/3;
    # lags 2 and 3 pair each 1 with a 2: -1.
    for k, expected in [(1, 1 / 3), (2, -1.0), (3, -1.0)]:
        assert facts.loc[f"acf |r| lag {k}", "real"] == pytest.approx(1.0)
        assert facts.loc[f"acf |r| lag {k}", "synthetic"] == pytest.approx(expected)
    assert facts.loc["mean cross-asset correlation", "real"] == pytest.approx(-1.0)
    assert facts.loc["mean cross-asset correlation", "synthetic"] == pytest.approx(1.0)
    assert facts.loc["correlation matrix distance (RMS)", "synthetic"] == pytest.approx(2.0)
    assert "classifier accuracy" not in facts.index


def test_classifier_two_sample_test_tells_different_windows_apart_and_not_identical_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(150, WINDOW, 3)), rng.normal(size=(150, WINDOW, 3))
    same = stylized_facts(a, b, lags=[1], random_state=0)
    accuracy = same.set_index("fact").loc["classifier accuracy", "synthetic"]
    assert abs(accuracy - 0.5) < 0.1
    assert same.attrs["n_per_class"] == 150 and len(same.attrs["fold_accuracy"]) == 5

    louder = stylized_facts(a, 3 * b, lags=[1], random_state=0)
    assert louder.set_index("fact").loc["classifier accuracy", "synthetic"] > 0.9
    again = stylized_facts(a, 3 * b, lags=[1], random_state=0)
    pd.testing.assert_frame_equal(louder, again)


def test_stylized_facts_cuts_a_returns_frame_into_windows_and_rejects_mismatches():
    returns = market(n_days=103)
    windows = return_windows(returns, WINDOW)
    assert windows.shape == (20, WINDOW, 4)
    np.testing.assert_array_equal(windows[1], returns.iloc[5:10].to_numpy())
    facts = stylized_facts(returns, windows, lags=[1], cv=0)
    assert (facts["real"] == facts["synthetic"]).iloc[:-1].all()  # the same windows (distance: 0 vs 0)
    with pytest.raises(DataError, match="must match"):
        stylized_facts(windows, windows[:, :, :3], cv=0)
    with pytest.raises(DataError, match="at least one"):
        stylized_facts(returns, returns)
    with pytest.raises(DataError, match="lags"):
        stylized_facts(windows, windows, lags=[WINDOW], cv=0)
    default = stylized_facts(windows, windows, cv=0)  # windows of 5 days: lags 1-4, not 1-10
    assert default["fact"].str.startswith("acf |r| lag").sum() == WINDOW - 1
    for bad in (0, -3, 2.5):
        with pytest.raises(DataError, match="window must be a whole number of days"):
            return_windows(returns, bad)
    with pytest.raises(DataError, match="stride must be a whole number of days"):
        return_windows(returns, WINDOW, stride=0)
    gappy = returns.copy()
    gappy.iloc[::4, 0] = np.nan  # a gap in every window
    with pytest.raises(DataError, match=r"Of the 20 windows of 5 days in its daily returns, 0 have no missing value"):
        stylized_facts(gappy, windows, cv=0)


def test_concept_vector_takes_a_range_index(fitted):
    model, returns = fitted
    mask = np.zeros(len(returns), bool)
    mask[100:200] = True
    plain = concept_vector(model, returns.reset_index(drop=True), mask, n_boot=5, random_state=0)
    dated = concept_vector(model, returns, mask, n_boot=5, random_state=0)
    np.testing.assert_allclose(plain.vector, dated.vector)


def test_stress_scenarios_at_a_label_of_a_range_index(fitted):
    model, returns = fitted
    plain = returns.reset_index(drop=True)
    at = len(plain) - 10
    by_label = stress_scenarios(model, plain, [1.0, 0.0], strengths=(0, 1), at=at)
    by_date = stress_scenarios(model, returns, [1.0, 0.0], strengths=(0, 1), at=returns.index[at])
    np.testing.assert_allclose(by_label.pnl.to_numpy(), by_date.pnl.to_numpy())
    assert str(at) in repr(by_label)
