"""The lean env runner: RLlib's SingleAgentEnvRunner sampling an asynchronous vector env into array-built fragments.

`runner.LeanEnvRunner` (selected with `config.env_runners(env_runner_cls=...)`) imports Ray and torch;
`fragments.FragmentCollector`, its sampling loop, imports neither. This module holds only the env_config
keys the runner reads, so recipes and `rljob play` can name them without Ray.

The runner takes its env from the config: env_config[VECTOR_ENV_KEY] names a factory "module:function",
called as factory(env_config without the runner's keys, num_envs). The env it returns speaks envpool's
send/recv protocol (`fragments.AsyncVectorEnv`: ale-py's AtariVectorEnv does) and has Discrete actions.
"""
from __future__ import annotations

# env_config keys the lean runner reads and removes before it calls the factory: no env takes them.
VECTOR_ENV_KEY = "vector_env"  # "module:function" making the vector env
INFERENCE_THREADS_KEY = "inference_threads"  # torch threads for the policy's forward pass on the runner's CPUs
RUNNER_KEYS = frozenset({VECTOR_ENV_KEY, INFERENCE_THREADS_KEY})
