"""finvae.windows: causal EWMA scaling (by hand, causality, NaN carry-forward, floor), window views, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finvae.windows import WindowBatches, ewma_scale, sliding_windows, trailing_ewma

NAN = np.nan


def _random_returns(n_days: int = 60, n_assets: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 0.01, size=(n_days, n_assets))


# ------------------------------------------------------------------ ewma_scale


def test_ewma_scale_matches_a_hand_computation():
    # halflife 1 day: lam = 0.5, var[t+1] = 0.5 var[t] + 0.5 r[t]**2, scale[t] = max(sqrt(var[t]), floor).
    returns = np.array([[0.1, 0.0], [NAN, 0.2], [0.3, NAN], [0.0, 0.0]])
    scale = ewma_scale(returns, halflife=1.0, initial_var=np.array([0.04, 0.01]), floor=np.array([0.05, 0.12]))
    # Asset 0: var = 0.04, 0.025 (0.5*0.04 + 0.5*0.1**2), 0.025 (NaN: carried), 0.0575 (0.5*0.025 + 0.5*0.3**2).
    # Asset 1: var = 0.01, 0.005, 0.0225, 0.0225 (NaN: carried); sqrt 0.1 and 0.0707 are below the floor 0.12.
    expected = np.array([
        [0.2, 0.12],
        [np.sqrt(0.025), 0.12],
        [np.sqrt(0.025), 0.15],
        [np.sqrt(0.0575), 0.15],
    ])  # fmt: skip
    assert scale.dtype == np.float32 and scale.shape == returns.shape
    np.testing.assert_allclose(scale, expected, rtol=1e-6)


def test_ewma_scale_is_causal_scale_t_uses_returns_before_t_only():
    returns = _random_returns()
    kwargs = dict(halflife=5.0, initial_var=np.full(3, 1e-4), floor=np.full(3, 1e-4))
    base = ewma_scale(returns, **kwargs)
    for t in (0, 1, 17, 59):
        changed = returns.copy()
        changed[t:] = np.random.default_rng(t).normal(0.0, 0.5, size=changed[t:].shape)  # day t and after
        scale = ewma_scale(changed, **kwargs)
        np.testing.assert_array_equal(scale[: t + 1], base[: t + 1])  # up to and including t: unchanged
        if t + 1 < len(returns):
            assert not np.allclose(scale[t + 1], base[t + 1])  # day t's return enters at t + 1


def test_ewma_scale_carries_forward_over_nan():
    returns = _random_returns(40, 2)
    returns[10:25, 0] = NAN  # a trading halt in asset 0
    scale = ewma_scale(returns, halflife=3.0, initial_var=np.full(2, 1e-4), floor=np.zeros(2))
    # scale[t] uses returns up to t - 1: the last return before the gap (day 9) sets scale[10], then nothing moves.
    assert np.all(scale[10:26, 0] == scale[10, 0])
    assert scale[26, 0] != scale[25, 0]  # day 25's return is back in
    assert np.all(np.isfinite(scale))
    assert len(np.unique(scale[10:26, 1])) > 1  # the other asset keeps moving


def test_ewma_scale_respects_the_floor_on_stale_prices():
    returns = _random_returns(80, 2)
    returns[20:, 1] = 0.0  # stale prices: the variance decays towards zero
    floor = np.array([1e-6, 0.004])
    scale = ewma_scale(returns, halflife=2.0, initial_var=np.full(2, 1e-4), floor=floor)
    assert np.all(scale >= floor.astype(np.float32))
    assert np.all(scale[40:, 1] == np.float32(0.004))  # pinned at the floor
    unfloored = ewma_scale(returns, halflife=2.0, initial_var=np.full(2, 1e-4), floor=np.zeros(2))
    assert unfloored[-1, 1] < 1e-6  # without it the scale would vanish


def test_ewma_scale_does_not_modify_its_input():
    returns = _random_returns()
    returns[3, 1] = NAN
    copy = returns.copy()
    ewma_scale(returns, halflife=4.0, initial_var=np.full(3, 1e-4), floor=np.zeros(3))
    np.testing.assert_array_equal(returns, copy)


# ------------------------------------------------------------------ sliding_windows


def test_trailing_ewma_gives_the_level_before_each_value_and_after_the_last():
    values = np.random.default_rng(0).exponential(size=30)
    lam, level, expected = 0.5 ** (1 / 3.0), 1.7, []
    for value in values:
        expected.append(level)
        level = lam * level + (1 - lam) * value
    expected.append(level)
    np.testing.assert_allclose(trailing_ewma(values, 1.7, 3.0), expected, rtol=1e-12)


def test_sliding_windows_is_a_view_and_window_i_ends_on_day_i_plus_window_minus_1():
    values = torch.arange(30.0).reshape(10, 3)  # day d, asset a holds 3 d + a
    windows = sliding_windows(values, 4)
    assert windows.shape == (7, 3, 4)  # (n_windows, n_assets, window)
    assert windows.untyped_storage().data_ptr() == values.untyped_storage().data_ptr()  # no copy
    for i in range(7):
        torch.testing.assert_close(windows[i], values[i : i + 4].T)


# ------------------------------------------------------------------ WindowBatches


def _stretches(window: int, ends: np.ndarray, per_example: int, n_days: int, n_assets: int = 2, seed: int = 0):
    """All items of an epoch in a shuffled order, as the trainer draws them, with each day's number in asset 0."""
    values = torch.zeros(n_days, n_assets)
    values[:, 0] = torch.arange(n_days, dtype=torch.float32)
    observed = torch.ones(n_days, n_assets, dtype=torch.bool)
    data = WindowBatches(values, observed, window, torch.as_tensor(ends), per_example)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data, [data[order[i : i + 3]] for i in range(0, len(data), 3)]  # batches of 3 stretches


@pytest.mark.parametrize(
    ("window", "per_example", "ends"),
    [
        (5, 8, np.arange(4, 60)),  # every day from the first full window on
        (5, 7, np.arange(4, 61)),  # a last stretch that runs past the data
        (3, 4, np.r_[2:10, 14:30, 31:33]),  # gaps: days too thinly covered to be trained on
        (20, 32, np.arange(40, 200, 3)),  # training days start later than the first full window
        (4, 1, np.arange(3, 12)),  # one window per stretch
    ],
)
def test_window_batches_cover_every_training_end_exactly_once_with_its_context(window, per_example, ends):
    n_days = int(ends[-1]) + 1
    data, batches = _stretches(window, ends, per_example, n_days)
    seen = []
    for x, observed, counted in batches:
        assert x.shape == observed.shape == (len(counted), window - 1 + per_example, 2)
        assert counted.shape == x.shape[:2]
        assert not counted[:, : window - 1].any()  # context days never count
        days = x[..., 0]
        for row, col in counted.nonzero().tolist():
            seen.append(int(days[row, col]))
            # the window ending on a counted day is in the stretch, whole and in order
            expected = torch.arange(days[row, col] - window + 1, days[row, col] + 1)
            torch.testing.assert_close(days[row, col - window + 1 : col + 1], expected)
    assert sorted(seen) == ends.tolist()  # every training window once per epoch, nothing else
    assert len(data) == -(-(int(ends[-1]) - int(ends[0]) + 1) // per_example)


def test_window_batches_never_copy_the_whole_windows():
    # A stretch holds window - 1 + per_example days, not window x per_example: memory grows with days.
    window, per_example = 20, 32
    data, _ = _stretches(window, np.arange(19, 500), per_example, 500)
    x, _, counted = data[torch.tensor([0, 1])]  # two full stretches
    assert x.shape == (2, window - 1 + per_example, 2)
    assert int(counted.sum()) == 2 * per_example


def test_ewma_scale_of_an_asset_without_any_return_is_its_starting_scale():
    returns = _random_returns(30, 2)
    returns[:, 1] = NAN  # not listed yet anywhere in this stretch
    scale = ewma_scale(returns, halflife=3.0, initial_var=np.array([1e-4, 4e-4]), floor=np.zeros(2))
    np.testing.assert_allclose(scale[:, 1], 0.02)
    assert len(np.unique(scale[:, 0])) > 1
