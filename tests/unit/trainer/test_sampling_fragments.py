"""The lean runner's bookkeeping loses and duplicates no env step, across autoresets and fragment cuts.

Every env of an asynchronous `AtariVectorEnv` is replayed afterwards, alone and synchronously, from
the same seed with the actions the fragments recorded: its observations, rewards, terminations and
episode returns must come out identical, and each episode's length must match ALE's own frame counter.
ALE is deterministic here (no sticky actions; no-ops drawn from each env's seeded generator), so any
step lost, duplicated or attributed to the wrong env or episode shows up as a mismatch.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from rljob.trainer.recipes.atari_env import ALE_SETTINGS, ale_preprocessing, make_async_frame_stack_env
from rljob.trainer.sampling.fragments import Collected, Fragment, FragmentCollector

PONG = {"env_id": "ale_py:ALE/Pong-v5", **ALE_SETTINGS, "num_threads": 2}
SEED = 1234
ACTIONS = 6


class RandomPolicy:
    """Seeded random actions with a recognisable log-probability and distribution inputs."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(obs)
        actions = self.rng.choice(ACTIONS, size=n, p=[0.9, 0.02, 0.02, 0.02, 0.02, 0.02]).astype(np.int64)
        return actions, np.full(n, -1.5, np.float32), np.tile(np.arange(ACTIONS, dtype=np.float32), (n, 1))


def _collector(num_envs: int, seed: int = SEED) -> FragmentCollector:
    env = make_async_frame_stack_env(PONG, num_envs, 4)
    return FragmentCollector(env, obs_shape=(4, 64, 64), num_actions=ACTIONS, seed=seed)


def _episodes(fragments: list[Fragment]) -> dict[int, list[list[Fragment]]]:
    """Per env, its episodes in order, each as its fragments in order."""
    by_env: dict[int, dict[str, list[Fragment]]] = defaultdict(dict)
    for f in fragments:
        by_env[f.env].setdefault(f.episode_id, []).append(f)
    return {e: [sorted(parts, key=lambda f: f.t_started) for parts in eps.values()] for e, eps in by_env.items()}


def _replay(env_index: int, episodes: list[list[Fragment]]) -> None:
    """Steps env `env_index` alone with the recorded actions and compares every step."""
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv(num_envs=1, num_threads=1, stack_num=4, autoreset_mode="NextStep", **ale_preprocessing(PONG))
    try:
        obs, info = env.reset(seed=SEED + env_index)
        for n, parts in enumerate(episodes):
            if n > 0:  # next-step autoreset: one step whose action is ignored returns the new first observation
                obs, _, _, _, info = env.step(np.zeros(1, np.int64))
            first_frame = int(info["episode_frame_number"][0])
            expected_t = 0
            for part in parts:
                assert part.t_started == expected_t, f"env {env_index} episode {n}: fragment starts at {part.t_started}"
                np.testing.assert_array_equal(part.observations[0], obs[0])
                for t, action in enumerate(part.actions):
                    obs, reward, terminated, truncated, info = env.step(np.array([action]))
                    assert part.rewards[t] == reward[0], f"env {env_index} episode {n} step {part.t_started + t}: reward"
                    np.testing.assert_array_equal(part.observations[t + 1], obs[0])
                    last = t == len(part.actions) - 1
                    assert bool(terminated[0]) == (last and part.terminated)
                    assert bool(truncated[0]) == (last and part.truncated)
                expected_t += len(part)
            if parts[-1].terminated:
                # Each agent step is 4 emulator frames (the last one may stop early, when the game ends):
                # the episode has as many steps as ALE's own frame counter says.
                assert -(-(int(info["episode_frame_number"][0]) - first_frame) // 4) == expected_t
    finally:
        env.close()


def test_every_env_replays_identically_across_autoresets_and_cuts() -> None:
    collector = _collector(num_envs=4)
    policy = RandomPolicy(0)
    fragments: list[Fragment] = []
    finished = []
    steps = 0
    try:
        while len(finished) < 6:  # several whole games, so autoreset boundaries are crossed
            out = collector.collect(policy, num_steps=4 * 100)
            assert out.env_steps >= 400 and out.env_steps < 400 + collector.batch_size
            assert sum(len(f) for f in out.fragments) == out.env_steps
            fragments += out.fragments
            finished += out.finished
            steps += out.env_steps
    finally:
        collector.close()
    assert all(len(f.observations) == len(f) + 1 for f in fragments)
    episodes = _episodes(fragments)
    assert sorted(episodes) == [0, 1, 2, 3]
    for e, eps in episodes.items():
        _replay(e, eps)
    # Returns and lengths reported for finished episodes equal the sums over their fragments.
    by_id = defaultdict(list)
    for f in fragments:
        by_id[f.episode_id].append(f)
    for stats in finished:
        parts = by_id[stats.episode_id]
        assert parts[-1].terminated or parts[-1].truncated or any(p.terminated for p in parts)
        assert stats.length == sum(len(p) for p in parts)
        assert stats.episode_return == pytest.approx(sum(float(p.rewards.sum()) for p in parts))
        assert -21 <= stats.episode_return <= 21


def test_a_small_generation_splits_episodes_without_losing_steps() -> None:
    """Envs run unevenly in async mode; when one outgrows its columns every segment is cut and carried on."""
    collector = _collector(num_envs=4)
    policy = RandomPolicy(1)
    try:
        out = collector.collect(policy, num_steps=40)  # 12 columns per generation
        more = Collected()
        for _ in range(5):
            part = collector.collect(policy, num_steps=40)
            more.fragments += part.fragments
        collector_steps = out.env_steps + sum(len(f) for f in more.fragments)
    finally:
        collector.close()
    fragments = out.fragments + more.fragments
    assert sum(len(f) for f in fragments) == collector_steps
    for e, eps in _episodes(fragments).items():
        _replay(e, eps)


def test_whole_episodes_mode_returns_finished_episodes_only() -> None:
    collector = _collector(num_envs=2)
    policy = RandomPolicy(2)
    try:
        collector.collect(policy, num_steps=50)
        out = collector.collect(policy, num_episodes=1)
        assert len(out.finished) >= 1
        assert {f.episode_id for f in out.fragments} == {s.episode_id for s in out.finished}
        for f in out.fragments:
            assert f.t_started == 0 and f.terminated
            assert len(f) == next(s.length for s in out.finished if s.episode_id == f.episode_id)
        # Afterwards, sampling by steps starts again from fresh episodes.
        again = collector.collect(policy, num_steps=20)
        assert again.env_steps >= 20 and all(f.t_started == 0 for f in again.fragments)
    finally:
        collector.close()


def test_an_odd_number_of_envs_is_refused() -> None:
    with pytest.raises(ValueError, match="two halves"):
        make_async_frame_stack_env(PONG, 3, 4)


def test_the_weights_version_is_recorded_per_step() -> None:
    collector = _collector(num_envs=2)
    try:
        collector.weights_seq_no = 7
        out = collector.collect(RandomPolicy(3), num_steps=10)
    finally:
        collector.close()
    for f in out.fragments:
        # The first action of a later fragment may come from the previous weights; these are the first.
        assert set(f.weights_seq_no.tolist()) == {7}
        assert (f.action_logp == -1.5).all() and f.action_dist_inputs.shape == (len(f), ACTIONS)


def _base_address(fragment: Fragment) -> int:
    base = fragment.observations.base if fragment.observations.base is not None else fragment.observations
    return int(base.__array_interface__["data"][0])


def _assert_unchanged(collected: list[Collected], snapshots: list[list[np.ndarray]]) -> None:
    """(In a function of its own: loop variables left bound would hold the last fragment.)"""
    for c, snapshot in zip(collected, snapshots, strict=True):
        for f, before in zip(c.fragments, snapshot, strict=True):
            np.testing.assert_array_equal(f.observations, before)


def test_a_generation_is_written_again_only_once_nothing_refers_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh memory costs a page fault per page on first write: a generation's observation array is reused, but
    never while a fragment (or any view of one) handed out from it is alive."""
    allocated: list[tuple[int, ...]] = []
    empty = np.empty

    def counting_empty(shape: tuple[int, ...], *args: object, **kwargs: object) -> np.ndarray:
        if isinstance(shape, tuple) and len(shape) == 5:  # (envs, columns, frames, h, w): a generation's frames
            allocated.append(shape)
        return empty(shape, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(np, "empty", counting_empty)
    collector = _collector(num_envs=4)
    policy = RandomPolicy(2)
    try:
        kept = [collector.collect(policy, num_steps=40) for _ in range(4)]  # every fragment held
        snapshots = [[f.observations.copy() for f in c.fragments] for c in kept]
        addresses = [{_base_address(f) for f in c.fragments} for c in kept]
        assert all(len(a) == 1 for a in addresses) and len(set.union(*addresses)) == 4  # four arrays, none reused
        _assert_unchanged(kept, snapshots)  # and none written after it was handed out

        view = kept[-1].fragments[0].observations[1:]  # a view outlives its fragment: it holds the array
        held = _base_address(kept[-1].fragments[0])
        assert len(allocated) == 5  # the fifth is being filled now
        del kept, snapshots
        seen = [{_base_address(f) for f in collector.collect(policy, num_steps=40).fragments} for _ in range(4)]
        assert held not in set.union(*seen)
        assert len(allocated) == 6  # one more, while the view holds the newest spare; then two arrays take turns
        assert len(set.union(*seen)) == 2
        assert view.base is not None and int(view.base.__array_interface__["data"][0]) == held
    finally:
        collector.close()
