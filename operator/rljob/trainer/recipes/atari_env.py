"""The Atari environment as RLlib's env runners create it: ALE with RLlib's new-stack wrappers.

Lives in its own small module (no ray import at module level) because env runner processes import
it by reference when Ray unpickles the env creator, `rljob run` imports it to check the env id
before any Ray process starts, and `rljob play` plays with it where Ray is not installed (the vector env,
and `atari_film_env`, which imports no Ray either).
"""
from __future__ import annotations

from typing import Any

from ..sampling import RUNNER_KEYS

# Settings that make ALE v5 behave like the classic "NoFrameskip-v4" setup that RLlib's wrappers
# (max-and-skip 4 frames, no sticky actions) were tuned for.
ALE_SETTINGS: dict[str, Any] = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False}
ENV_NAME = "rljob-atari"
# Frames per stack in the lean runner's env_config: `make_lean_env` takes it, ALE's env constructors do not.
FRAMESTACK_KEY = "framestack"
# The lean runner's env factory (env_config[sampling.VECTOR_ENV_KEY]).
LEAN_ENV_FACTORY = f"{__name__}:make_lean_env"


def _quiet_ale() -> None:
    """ALE prints a banner for every emulator it creates; one per env runner is noise in the logs."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)


def check_env_id(env_id: str) -> str | None:
    """Returns why `env_id` cannot be made (no such id, no ROM), or None when it can."""
    import ale_py
    import gymnasium as gym

    _quiet_ale()
    gym.register_envs(ale_py)
    try:
        env = gym.make(env_id, **ALE_SETTINGS)
    except gym.error.Error as exc:
        return f"{env_id!r} is not an installed Atari environment: {exc}"
    except Exception as exc:  # ale-py raises plain errors for a missing ROM
        return f"cannot create {env_id!r}: {type(exc).__name__}: {exc}"
    env.close()
    return None


def make_atari_env(config: dict[str, Any]) -> Any:
    """The env creator registered with Ray: grayscale 64x64 frames in [-1, 1], max-and-skip 4, no frame stack.

    Frame stacking is left to the connectors (FrameStackingEnvToModule / FrameStackingLearner), so
    env runners send single frames instead of 4x larger stacked observations.

    RLlib calls this with ``num_envs`` in the config when the runner's vectorize mode is
    ``vector_entry_point``: the runner then gets ale-py's C++ `AtariVectorEnv` (all of its envs
    stepped by native threads, no Python wrapper per frame) instead of one wrapped env per copy.
    """
    settings = dict(config)
    num_envs = settings.pop("num_envs", None)
    if num_envs is not None:
        return make_ale_vector_env(settings, int(num_envs))
    import ale_py
    import gymnasium as gym
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    _quiet_ale()
    gym.register_envs(ale_py)
    settings.pop("num_threads", None)
    env_id = settings.pop("env_id")
    dim = int(settings.pop("dim", 64))
    return whole_games(wrap_atari_for_new_api_stack(gym.make(env_id, **settings), dim=dim, framestack=None))


def whole_games(env: Any) -> Any:
    """Unhooks RLlib's EpisodicLifeEnv from a wrapped env: an episode is a whole game, as in the vector envs.

    RLlib's wrappers end an episode at each lost life; the returns would then be per life, not per game, and a
    return target such as 18 would mean another thing for Breakout than for Pong.
    """
    from ray.rllib.env.wrappers.atari_wrappers import EpisodicLifeEnv

    outer = env
    while hasattr(outer, "env"):
        if isinstance(outer.env, EpisodicLifeEnv):
            outer.env = outer.env.env
            return env
        outer = outer.env
    return env


def ale_game(env_id: str) -> str:
    """``ale_py:ALE/Pong-v5`` -> ``pong``: the ROM name `AtariVectorEnv` takes."""
    import ale_py
    import gymnasium as gym

    gym.register_envs(ale_py)
    spec = gym.spec(env_id.split(":", 1)[-1])
    game = spec.kwargs.get("game")
    if not isinstance(game, str):
        raise ValueError(f"{env_id!r} is not an ALE environment (its spec names no game)")
    return game


def ale_preprocessing(settings: dict[str, Any]) -> dict[str, Any]:
    """`AtariVectorEnv` arguments that match `wrap_atari_for_new_api_stack` frame for frame.

    Same: frameskip 4 with a max over the last two frames, up to 30 no-ops and FIRE at reset, 108,000
    frames per episode at most, grayscale, dim x dim, unclipped rewards (the learner sees what the game
    gives). An episode is a whole game: a lost life does not end it (ale-py's `episodic_life` would
    reset the whole game at each one; `whole_games` takes RLlib's per-life wrapper off the single env).
    Differs only in order: ALE takes the max before resizing (as DeepMind's setup does), RLlib's wrappers
    after. Training and evaluation use these same settings (`atari_vector_env`).
    """
    dim = int(settings.get("dim", 64))
    frameskip = settings.get("frameskip", 1)
    if frameskip != 1:
        raise ValueError(f"frameskip={frameskip}: the vector env skips 4 frames itself; give frameskip=1 as the single env does")
    return {
        "game": ale_game(settings["env_id"]),
        "img_height": dim,
        "img_width": dim,
        "grayscale": True,
        "frameskip": 4,
        "maxpool": True,
        "noop_max": 30,
        "use_fire_reset": True,
        "episodic_life": False,
        "reward_clipping": False,
        "max_num_frames_per_episode": 108_000,
        "repeat_action_probability": float(settings.get("repeat_action_probability", 0.0)),
        "full_action_space": bool(settings.get("full_action_space", False)),
    }


def make_ale_vector_env(settings: dict[str, Any], num_envs: int) -> Any:
    """The stock runner's vector env: single grayscale frames in [-1, 1], stacked later by the connectors."""
    from ale_py.vector_env import AtariVectorEnv

    _quiet_ale()
    inner = AtariVectorEnv(
        num_envs=num_envs,
        num_threads=max(1, int(settings.get("num_threads", 1))),
        stack_num=1,
        **ale_preprocessing(settings),
    )
    return _normalized_frames(inner, int(settings.get("dim", 64)))


def atari_vector_env(settings: dict[str, Any], num_envs: int, framestack: int, batch_size: int | None = None) -> Any:
    """ale-py's vector env with uint8 frame stacks (framestack, dim, dim): what the lean runner trains on and what
    the evaluation plays, built here once so that both see the same observations.

    ALE stacks the frames itself (no copies in Python), and next-step autoreset keeps every terminal
    observation real: the action sent with it is ignored and the next result for that env is the first
    observation of its new episode. `batch_size` below `num_envs` makes it asynchronous (`recv` returns the
    first `batch_size` envs to finish).
    """
    from ale_py.vector_env import AtariVectorEnv

    _quiet_ale()
    return AtariVectorEnv(
        num_envs=num_envs,
        batch_size=batch_size or num_envs,
        num_threads=max(1, int(settings.get("num_threads", 1))),
        stack_num=framestack,
        autoreset_mode="NextStep",
        **ale_preprocessing(settings),
    )


def make_async_frame_stack_env(settings: dict[str, Any], num_envs: int, framestack: int) -> Any:
    """The lean runner's env: half the envs returned per `recv`, the other half emulated meanwhile."""
    if num_envs < 2 or num_envs % 2:
        raise ValueError(f"{num_envs} envs cannot be split into two halves for asynchronous stepping; give an even number >= 2")
    return atari_vector_env(settings, num_envs, framestack, batch_size=num_envs // 2)


def make_lean_env(config: dict[str, Any], num_envs: int) -> Any:
    """The lean runner's env from its env_config: `make_async_frame_stack_env` with the config's frames per stack."""
    settings = dict(config)
    framestack = int(settings.pop(FRAMESTACK_KEY, 4))
    return make_async_frame_stack_env(settings, num_envs, framestack)


def atari_film_env(settings: dict[str, Any], framestack: int) -> Any:
    """One game to film (ale-py's vector env has no colour screen), with `atari_vector_env`'s observations as near as
    gymnasium's wrappers make them: grayscale dim x dim, frameskip 4 with a max over the last two frames before
    resizing, up to 30 no-ops and FIRE at reset, whole games, uint8 stacks (framestack, dim, dim); RGB screens
    from `render()`. Imports no Ray, so `rljob play` films where Ray is not installed.
    """
    import ale_py
    import gymnasium as gym

    _quiet_ale()
    gym.register_envs(ale_py)
    kwargs = {k: v for k, v in settings.items() if k not in ("env_id", "dim", "num_threads", FRAMESTACK_KEY, *RUNNER_KEYS)}
    env = gym.make(settings["env_id"], render_mode="rgb_array", **kwargs)
    env = gym.wrappers.AtariPreprocessing(env, noop_max=30, frame_skip=4, screen_size=int(settings.get("dim", 64)),
                                          terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = _fire_at_reset(env)
    return gym.wrappers.FrameStackObservation(env, framestack)


def _fire_at_reset(env: Any) -> Any:
    """Wraps `env` so that each reset presses FIRE (then action 2), which games such as Breakout wait for."""
    import gymnasium as gym

    class FireAtReset(gym.Wrapper):
        def reset(self, **kwargs: Any) -> Any:
            obs, info = self.env.reset(**kwargs)
            for action in (1, 2):
                obs, _, terminated, truncated, info = self.env.step(action)
                if terminated or truncated:
                    obs, info = self.env.reset(**kwargs)
            return obs, info

    return FireAtReset(env)


def _normalized_frames(env: Any, dim: int) -> Any:
    """Wraps `env`; the class is built here because gymnasium is imported lazily in this module."""
    import gymnasium as gym
    import numpy as np

    class NormalizedFrames(gym.vector.VectorObservationWrapper):
        """(n, 1, h, w) uint8 -> (n, h, w, 1) float32 in [-1, 1]: what RLlib's NormalizedImageEnv gives."""

        def __init__(self, env: Any) -> None:
            super().__init__(env)
            self.single_observation_space = gym.spaces.Box(-1.0, 1.0, (dim, dim, 1), np.float32)
            self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, env.num_envs)

        def observations(self, observations: Any) -> Any:
            return np.moveaxis(observations, 1, -1).astype(np.float32) / 128.0 - 1.0

    return NormalizedFrames(env)
