"""The score's parts, their calibration and the threshold (finvae.scoring), on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from finvae.scoring import (
    BREADTH_QUANTILE,
    SCORE_PARTS,
    STATISTICS,
    combine,
    fisher_surprise,
    fit_calibration,
    fit_tail,
    index_move,
    part_surprises,
    raw_parts,
    squared_quantile,
    tail_surprise,
    threshold,
)


def test_squared_quantile_is_numpys_quantile_over_each_rows_observed_entries():
    rng = np.random.default_rng(0)
    values, observed = rng.normal(size=(40, 7)), rng.random((40, 7)) > 0.3
    observed[3] = False
    observed[4] = np.arange(7) == 2
    expected = [np.quantile(row[seen] ** 2, 0.3) if seen.any() else 0.0
                for row, seen in zip(values, observed, strict=True)]
    np.testing.assert_allclose(squared_quantile(values, observed, 0.3), expected, rtol=1e-12)


@pytest.mark.parametrize("pareto", [True, False])
def test_the_surprise_is_minus_log_of_the_training_tail_probability(pareto):
    train = np.random.default_rng(1).exponential(size=20_000)
    calibration = fit_tail(train, pareto=pareto)
    # Below the tail start: the empirical distribution, -log P(part >= value).
    for value in (0.1, 0.5, 1.5):
        assert tail_surprise(np.array([value]), calibration)[0] == pytest.approx(-np.log((train >= value).mean()),
                                                                                 abs=0.03)
    # The top 1 % of training values are about 4.6 nats and beyond; larger values keep ranking.
    top = np.quantile(train, 0.99)
    assert tail_surprise(np.array([top]), calibration)[0] == pytest.approx(np.log(100), abs=0.4)
    far = tail_surprise(np.array([train.max(), 2 * train.max(), 4 * train.max()]), calibration)
    assert np.all(np.diff(far) > 0)


def test_an_asset_never_observed_in_training_is_never_surprising():
    calibration = fit_tail(np.array([]), pareto=False)
    assert np.all(tail_surprise(np.array([0.0, 1.0]), calibration) >= 0)


def test_the_parts_each_answer_to_their_own_kind_of_day():
    rng = np.random.default_rng(2)
    n, k = 2_000, 10
    kl = rng.gamma(2.0, 0.5, n)
    moves = np.abs(rng.normal(size=n)) / np.sqrt(k)
    residual = rng.normal(size=(n, k))
    seen = np.ones((n, k), bool)
    calibration, assets = fit_calibration(kl, moves, residual, residual, seen)
    assert set(calibration) == set(STATISTICS) and len(assets) == k

    days = np.repeat(residual[:1] * 0.1, 4, axis=0)  # four calm days, then one shock each
    day_kl, day_moves = np.full(4, 1.0), np.full(4, 0.1)
    day_kl[1], day_moves[1] = 30.0, 5.0               # a market-wide shock: the factors and the index move far
    days[2, 0] = 12.0                                 # one asset jumps
    days[3] = 4.0 * np.where(np.arange(k) % 2, 1, -1)  # the cross-section breaks
    surprises = part_surprises(raw_parts(day_kl, day_moves, days, days, seen[:4], assets), calibration)
    assert list(surprises) == list(SCORE_PARTS)
    assert surprises["market"].argmax() == 1
    assert surprises["max_residual"].argmax() == 2
    assert surprises["residual"].argmax() == 3
    assert surprises["residual"][2] < 2.0  # one stock's jump barely moves the breadth part
    np.testing.assert_array_equal(combine(surprises), np.max([surprises[p] for p in SCORE_PARTS], axis=0))
    assert combine(surprises)[1:].min() > 4.6 > combine(surprises)[0]


def test_the_market_part_needs_both_views_to_be_surprised():
    # Fisher's method: surprising on both the KL and the index move ranks above either alone.
    rng = np.random.default_rng(3)
    n, k = 2_000, 10
    calibration, assets = fit_calibration(rng.gamma(2.0, 0.5, n), np.abs(rng.normal(size=n)),
                                          rng.normal(size=(n, k)), rng.normal(size=(n, k)), np.ones((n, k), bool))
    kl, moves = np.array([20.0, 20.0, 1.0, 1.0]), np.array([4.0, 0.5, 4.0, 0.5])
    quiet = np.zeros((4, k))
    market = part_surprises(raw_parts(kl, moves, quiet, quiet, np.ones((4, k), bool), assets), calibration)["market"]
    assert market[0] > max(market[1], market[2]) and min(market[1], market[2]) > market[3]


def test_fishers_method_is_the_tail_of_the_product_of_two_uniform_p_values():
    rng = np.random.default_rng(4)
    product = -np.log(rng.random(200_000)) - np.log(rng.random(200_000))
    for first, second in [(1.0, 2.0), (3.0, 3.0), (4.6, 0.5)]:
        expected = -np.log((product >= first + second).mean())
        assert fisher_surprise(np.array([first]), np.array([second]))[0] == pytest.approx(expected, abs=0.05)
    assert fisher_surprise(np.zeros(1), np.zeros(1))[0] == 0.0


def test_the_index_move_is_the_equal_weight_move_over_the_observed_assets_in_training_units():
    values = np.array([[0.02, -0.01, np.nan], [np.nan, np.nan, np.nan], [0.03, 0.03, 0.03]])
    observed = ~np.isnan(values)
    mean, scale = np.array([0.0, 0.01, 0.0]), np.array([0.01, 0.01, 0.03])
    np.testing.assert_allclose(index_move(values, observed, mean, scale), [0.0, 0.0, (3.0 + 2.0 + 1.0) / 3])
    assert index_move(-values[2:], observed[2:], mean, scale)[0] == pytest.approx((3.0 + 4.0 + 1.0) / 3)


def test_the_breadth_part_is_a_low_quantile_of_the_squared_residuals():
    residual = np.array([[0.0, 1.0, 2.0, 3.0, 10.0]])
    seen = np.ones_like(residual, bool)
    part = raw_parts(np.zeros(1), np.zeros(1), residual, residual, seen,
                     [fit_tail(np.ones(5), pareto=False)] * 5)["residual"]
    np.testing.assert_allclose(part, np.quantile(residual[0] ** 2, BREADTH_QUANTILE))


def test_the_threshold_flags_the_contamination_share_of_finite_training_scores():
    scores = np.concatenate([np.arange(1000.0), [np.nan, np.inf]])
    assert threshold(scores, 0.01) == pytest.approx(np.quantile(np.arange(1000.0), 0.99))
    assert (np.arange(1000.0) > threshold(scores, 0.05)).mean() == pytest.approx(0.05, abs=0.002)


def test_a_value_at_a_level_shared_by_many_training_days_is_no_surprise():
    calibration = fit_tail(np.r_[np.full(900, 2.0), np.linspace(2.0, 3.0, 100)])
    assert float(tail_surprise(np.array([2.0]), calibration)[0]) == pytest.approx(0.0)
    constant = fit_tail(np.full(500, 1.5))
    assert float(tail_surprise(np.array([1.5]), constant)[0]) == 0.0
    assert float(tail_surprise(np.array([3.0]), constant)[0]) > 2.3  # beyond anything seen: the tail


def test_just_above_a_tied_level_the_surprise_follows_on_from_its_last_quantile():
    rng = np.random.default_rng(0)
    calibration = fit_tail(np.r_[rng.uniform(0, 1, 100), np.full(500, 1.5), rng.uniform(1.5, 3, 400)])
    at, above = tail_surprise(np.array([1.5, 1.5000001]), calibration)
    assert at == pytest.approx(-np.log1p(-0.1), abs=0.02)  # 10 % of training days lie below 1.5
    assert above == pytest.approx(-np.log1p(-0.6), abs=0.03)  # 60 % at or below it (to the grid's 1 %)
