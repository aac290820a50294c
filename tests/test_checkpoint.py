"""walk_forward(checkpoint_dir=...): resume after a crash, never reuse a block for other parameters or data."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator

from finvae.backtest import walk_forward

FAST = dict(refit_every=50, min_train=200)  # 700 days: 10 blocks
N_BLOCKS = 10

#: Fits done in this process, and a crash switch: the fit that finds ``fits_left == 0`` raises.
#: Module state, not parameters, so that the crashing run has the same key as the clean one.
LOG = {"fits": 0, "fits_left": None}


class Counted(BaseEstimator):
    """Causal, fast stand-in for FinVAE that counts its fits: score = |market return| / trailing std."""

    def __init__(self, lookback=20, random_state=0):
        self.lookback = lookback
        self.random_state = random_state

    def _scores(self, X):
        market = X.mean(axis=1)
        return market.abs() / market.rolling(self.lookback).std().shift(1)

    def fit(self, X, y=None):
        if LOG["fits_left"] is not None:
            if LOG["fits_left"] == 0:
                raise RuntimeError("simulated crash")
            LOG["fits_left"] -= 1
        LOG["fits"] += 1
        rng = np.random.default_rng(self.random_state)
        self.threshold_ = float(np.nanquantile(self._scores(X), 0.95)) * (1 + 0.1 * rng.random())
        return self

    def score(self, X):
        return self._scores(X)


@pytest.fixture(autouse=True)
def _reset_log():
    LOG.update(fits=0, fits_left=None)
    yield
    LOG.update(fits=0, fits_left=None)


def market(n_days=700, n_assets=4, seed=0):
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_days)
    values = rng.normal(0.0004, 0.01, n_days)[:, None] + rng.normal(0, 0.005, (n_days, n_assets))
    values[[300, 450, 600]] -= 0.08
    return pd.DataFrame(values, index=dates, columns=[f"S{i}" for i in range(n_assets)])


def fits(run) -> int:
    """How many fits ``run()`` did."""
    before = LOG["fits"]
    run()
    return LOG["fits"] - before


def block_files(folder):
    return sorted(folder.glob("block-*.json"))


def test_resume_after_a_crash_skips_the_finished_blocks_and_gives_the_same_result(tmp_path):
    r = market()
    clean = walk_forward(Counted(), r, **FAST)
    LOG["fits_left"] = 4  # the 5th fit crashes
    with pytest.raises(RuntimeError, match="simulated crash"):
        walk_forward(Counted(), r, checkpoint_dir=tmp_path, n_jobs=1, **FAST)
    assert len(block_files(tmp_path)) == 4  # each finished block was written as it ended
    assert not list(tmp_path.glob(".block-*"))  # no temporary file left behind
    LOG["fits_left"] = None
    resumed = {}
    assert fits(lambda: resumed.update(wf=walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST))) == 6
    pd.testing.assert_frame_equal(resumed["wf"], clean)
    # A third run refits nothing, and still gives the same frame.
    assert fits(lambda: resumed.update(wf=walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST))) == 0
    pd.testing.assert_frame_equal(resumed["wf"], clean)
    assert len(block_files(tmp_path)) == N_BLOCKS


def test_deleted_blocks_are_refitted_and_only_they(tmp_path):
    r = market()
    with joblib.parallel_config(backend="threading", n_jobs=2):  # results arrive in any order
        first = walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST)
    files = block_files(tmp_path)
    assert len(files) == N_BLOCKS
    for path in files[:3]:
        path.unlink()
    again = {}
    assert fits(lambda: again.update(wf=walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST))) == 3
    pd.testing.assert_frame_equal(again["wf"], first)


def test_other_parameters_or_data_never_reuse_a_block(tmp_path):
    r = market()
    walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST)

    def count(estimator, returns, **settings):
        return fits(lambda: walk_forward(estimator, returns, checkpoint_dir=tmp_path, **{**FAST, **settings}))

    assert count(Counted(random_state=1), r) == N_BLOCKS  # another seed
    assert count(Counted(lookback=21), r) == N_BLOCKS  # another parameter
    assert count(Counted(), r, contamination=0.05) == N_BLOCKS  # another threshold rule
    assert count(Counted(), r, window=300) == N_BLOCKS - 3  # rolling: the first three blocks train on rows 0.. too
    changed = r.copy()
    changed.iloc[0, 2] += 1e-12  # one value, on the first day
    assert count(Counted(), changed) == N_BLOCKS
    renamed = r.rename(columns={"S3": "T3"})
    assert count(Counted(), renamed) == N_BLOCKS
    shifted = r.set_axis(r.index + pd.Timedelta(days=1))
    assert count(Counted(), shifted) == N_BLOCKS
    as_float32 = r.astype(np.float32)
    assert count(Counted(), as_float32) == N_BLOCKS
    # The settings and data of the first run still find all their blocks.
    assert count(Counted(), r) == 0


def test_numpy_random_generators_are_keyed_by_their_state_not_their_address(tmp_path):
    from finvae._checkpoint import plain

    r = market()
    for seed in range(4):  # freed objects' addresses come back: a key by address would reuse seed 0's blocks
        assert fits(lambda seed=seed: walk_forward(Counted(random_state=np.random.default_rng(seed)), r,
                                                   checkpoint_dir=tmp_path, **FAST)) == N_BLOCKS
    assert fits(lambda: walk_forward(Counted(random_state=np.random.default_rng(1)), r,
                                     checkpoint_dir=tmp_path, **FAST)) == 0  # the same state: resumed
    assert plain(np.random.RandomState(0)) == plain(np.random.RandomState(0)) != plain(np.random.RandomState(1))
    assert plain(object()) != plain(object())  # an address in the repr: never reused


def test_verbosity_does_not_cost_a_resume(tmp_path):
    from finvae import FinVAE
    from finvae._checkpoint import BlockStore

    r = market()
    quiet, loud = FinVAE(random_state=0, verbose=0), FinVAE(random_state=0, verbose=1)
    blocks = [(0, 200, 250)]
    key = BlockStore(tmp_path, quiet, r, None).keys(blocks)
    assert BlockStore(tmp_path, loud, r, None).keys(blocks) == key  # progress bars change no result
    assert BlockStore(tmp_path, FinVAE(random_state=1, verbose=0), r, None).keys(blocks) != key
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    piped = [make_pipeline(FunctionTransformer(), FinVAE(random_state=0, verbose=v)) for v in (0, 1)]
    assert len({tuple(BlockStore(tmp_path, p, r, None).keys(blocks)) for p in piped}) == 1  # in a step too


def test_a_change_after_a_block_leaves_it_valid_and_new_days_reuse_the_done_blocks(tmp_path):
    r = market()
    walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST)
    changed = r.copy()
    changed.iloc[-1, 0] = 0.05  # the last day: only the last block reads it
    assert fits(lambda: walk_forward(Counted(), changed, checkpoint_dir=tmp_path, **FAST)) == 1
    longer = market(n_days=760)
    longer.iloc[:700] = r.to_numpy()  # the same first 700 days, then 60 new ones
    extended = {}
    assert fits(lambda: extended.update(wf=walk_forward(Counted(), longer, checkpoint_dir=tmp_path, **FAST))) == 2
    pd.testing.assert_frame_equal(extended["wf"], walk_forward(Counted(), longer, **FAST))


class Gappy(Counted):
    """Scores with NaN and infinite values, to check that they survive the round trip."""

    def score(self, X):
        scores = self._scores(X).to_numpy().copy()
        scores[-3:] = [np.nan, np.inf, -np.inf]
        return scores


def test_block_files_are_strict_json_and_round_trip_every_float(tmp_path):
    r = market()
    clean = walk_forward(Gappy(), r, **FAST)
    walk_forward(Gappy(), r, checkpoint_dir=tmp_path, **FAST)
    path = block_files(tmp_path)[0]
    saved = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert path.name == f"block-{saved['key']}.json"
    assert {"key", "rows", "dates", "threshold", "scores"} <= saved.keys()
    assert fits(lambda: walk_forward(Gappy(), r, checkpoint_dir=tmp_path, **FAST)) == 0
    pd.testing.assert_frame_equal(walk_forward(Gappy(), r, checkpoint_dir=tmp_path, **FAST), clean)


def test_a_damaged_block_file_is_refitted_with_a_warning(tmp_path):
    r = market()
    clean = walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST)
    damaged = block_files(tmp_path)[5]
    damaged.write_text(damaged.read_text()[:40])  # truncated
    again = {}
    with pytest.warns(UserWarning, match="damaged checkpoint file"):
        assert fits(lambda: again.update(wf=walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST))) == 1
    pd.testing.assert_frame_equal(again["wf"], clean)
    assert json.loads(damaged.read_text())["key"] in damaged.name  # rewritten whole
    for content in ("null", "[]"):  # valid JSON, but not a block
        damaged.write_text(content)
        with pytest.warns(UserWarning, match=r"damaged checkpoint file .*not a block's object"):
            pd.testing.assert_frame_equal(walk_forward(Counted(), r, checkpoint_dir=tmp_path, **FAST), clean)


def test_the_caller_returns_are_not_modified_and_the_folder_is_created(tmp_path):
    r = market()
    before = r.copy()
    folder = tmp_path / "a" / "b"
    walk_forward(Counted(), r, checkpoint_dir=folder, **FAST)
    pd.testing.assert_frame_equal(r, before)
    assert len(block_files(folder)) == N_BLOCKS


KEYS_SCRIPT = """
import json, sys
import numpy as np, pandas as pd
from sklearn.preprocessing import StandardScaler
from sklearn.pipeline import make_pipeline
from finvae import FinVAE
from finvae._checkpoint import BlockStore
rng = np.random.default_rng(0)
r = pd.DataFrame(rng.normal(size=(60, 3)), index=pd.bdate_range("2020-01-01", periods=60), columns=list("abc"))
est = make_pipeline(StandardScaler(), FinVAE(random_state=0, vol_halflife=(5, 60)))
def keys(folder):
    return BlockStore(folder, est, r, None).keys([(0, 40, 50), (0, 50, 60)])
if __name__ == "__main__":
    print(json.dumps(keys(sys.argv[1])))
"""


def test_keys_are_the_same_in_another_process(tmp_path):
    """A resumed run is another process: its keys must not depend on hash seeds, object ids or dict order."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent), PYTHONHASHSEED="12345")
    child = subprocess.run([sys.executable, "-c", KEYS_SCRIPT, str(tmp_path)], env=env, check=True,
                           capture_output=True, text=True)
    there = json.loads(child.stdout)
    here = {"__name__": "here"}
    exec(compile(KEYS_SCRIPT, "keys", "exec"), here)
    assert here["keys"](tmp_path) == there and len(set(there)) == 2


def test_an_unusable_checkpoint_folder_is_reported_before_any_fit(tmp_path):
    from finvae import DataError

    a_file = tmp_path / "taken"
    a_file.write_text("not a folder")
    with pytest.raises(DataError, match="Cannot write to the checkpoint folder"):
        assert fits(lambda: walk_forward(Counted(), market(), checkpoint_dir=a_file / "sub", **FAST)) == 0
    assert LOG["fits"] == 0


# ---- fit_or_load: the main job's reference model ----

def _tiny_returns(n_days=120, n_assets=4, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(0, 0.01, (n_days, n_assets)), columns=[f"A{i}" for i in range(n_assets)],
                        index=pd.bdate_range("2020-01-01", periods=n_days))


def test_fit_or_load_saves_once_then_loads_the_same_model(tmp_path, monkeypatch):
    from finvae import FinVAE
    from finvae._checkpoint import fit_or_load

    returns = _tiny_returns()
    estimator = FinVAE(window=5, latent_dim=2, hidden=8, epochs=1, random_state=0, verbose=0)
    model, reused = fit_or_load(tmp_path, estimator, returns)
    assert not reused and not hasattr(estimator, "model_")  # fits a clone, as walk_forward does
    assert [p.name[:6] for p in tmp_path.iterdir()] == ["model-"]  # one model folder, no staging left

    monkeypatch.setattr(FinVAE, "fit", lambda *a, **k: pytest.fail("refitted a saved model"))
    again, reused = fit_or_load(tmp_path, estimator, returns)
    assert reused
    pd.testing.assert_series_equal(again.score(returns), model.score(returns))
    pd.testing.assert_frame_equal(again.transform(returns), model.transform(returns))


def test_fit_or_load_refits_for_other_data_or_settings_and_after_damage(tmp_path):
    from finvae import FinVAE
    from finvae._checkpoint import fit_or_load

    returns = _tiny_returns()
    estimator = FinVAE(window=5, latent_dim=2, hidden=8, epochs=1, random_state=0, verbose=0)
    fit_or_load(tmp_path, estimator, returns)
    changed = returns.copy()
    changed.iloc[3, 1] += 1e-12
    assert not fit_or_load(tmp_path, estimator, changed)[1]
    assert not fit_or_load(tmp_path, estimator.set_params(epochs=2), returns)[1]
    assert len(list(tmp_path.iterdir())) == 3

    for folder in tmp_path.iterdir():  # a damaged model folder costs a refit, never the run
        (folder / "finvae.json").write_text("{not json")
    with pytest.warns(UserWarning, match="damaged checkpoint"):
        assert not fit_or_load(tmp_path, estimator, returns)[1]
    assert fit_or_load(tmp_path, estimator, returns)[1]  # saved again, whole


def test_fit_or_load_goes_on_when_the_model_cannot_be_saved(tmp_path, monkeypatch):
    """Saving the reference model is a convenience: a failure (a race with a twin run, a full disk) warns only."""
    import contextlib

    import finvae._checkpoint as checkpoint
    from finvae import FinVAE
    from finvae._checkpoint import fit_or_load

    @contextlib.contextmanager
    def failing_folder(path):
        raise OSError(39, "Directory not empty")
        yield

    monkeypatch.setattr(checkpoint, "atomic_folder", failing_folder)
    returns = market()
    with pytest.warns(UserWarning, match="Could not save the model to the checkpoint"):
        model, reused = fit_or_load(tmp_path, FinVAE(window=5, hidden=8, epochs=1, random_state=0, verbose=0),
                                    returns)
    assert not reused and hasattr(model, "threshold_")
