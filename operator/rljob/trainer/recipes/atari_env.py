"""The Atari environment as RLlib's env runners create it: ALE with RLlib's new-stack wrappers.

Lives in its own small module (no ray import at module level) because env runner processes import
it by reference when Ray unpickles the env creator, and `rljob run` imports it to check the env id
before any Ray process starts.
"""
from __future__ import annotations

from typing import Any

# Settings that make ALE v5 behave like the classic "NoFrameskip-v4" setup that RLlib's wrappers
# (max-and-skip 4 frames, no sticky actions) were tuned for.
ALE_SETTINGS: dict[str, Any] = {"frameskip": 1, "repeat_action_probability": 0.0, "full_action_space": False}
ENV_NAME = "rljob-atari"


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
    """The env creator registered with Ray: grayscale 64x64 frames, max-and-skip 4, no frame stack.

    Frame stacking is left to the connectors (FrameStackingEnvToModule / FrameStackingLearner), so
    env runners send single frames instead of 4x larger stacked observations.
    """
    import ale_py
    import gymnasium as gym
    from ray.rllib.env.wrappers.atari_wrappers import wrap_atari_for_new_api_stack

    _quiet_ale()
    gym.register_envs(ale_py)
    settings = dict(config)
    env_id = settings.pop("env_id")
    dim = int(settings.pop("dim", 64))
    return wrap_atari_for_new_api_stack(gym.make(env_id, **settings), dim=dim, framestack=None)
