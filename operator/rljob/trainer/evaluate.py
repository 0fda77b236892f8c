"""Watching a trained policy play: restore the RLModule from a checkpoint, play episodes, write a GIF.

Used by `rljob play` on a checkpoint the user has, and at the end of training by the pod driver and
`rljob run` (a short evaluation whose GIF lands next to the checkpoints). No Ray is involved, not even
imported: the policy is rebuilt as a plain torch network from the module's weights in the checkpoint
(rljob.trainer.policy), so `rljob play` needs torch and ALE only (`pip install 'rljob[play]'`), and runs
in this process on environments stepped here.

The environment is rebuilt from the algorithm config saved in the checkpoint (its env name and
env_config, read without Ray by rljob.trainer.pickles), so a checkpoint needs nothing else to be
played: not the job manifest, not the recipe args. The built-in recipe that trained on that env makes
it (`Recipe.evaluation_env`, `Recipe.evaluation_vector_env`); gymnasium makes any other env by name.

The score is evidence, not an anecdote: `play_games` plays N games (20 after training), game i reset
with seed + i, all at once where the recipe gives a vector env (the Atari recipe's: ALE's, with the
training's settings; for the lean runner's policies the observations are the training's, frame for
frame; the stock runner's see the same frames stacked as its connectors stack them; a whole game per
episode), else one env after another.

The GIF is a film of one more game (`film`) in the recipe's single env, with `rgb_array` rendering. For
Atari that is gymnasium's Atari wrappers (`atari_env.atari_film_env`), since ale-py's vector env has no
colour screen; its frames differ from the vector env's in small ways (resizing, the stack at reset). Its
score is shown in the picture, not counted.

Checkpoints are pickles, as all RLlib checkpoints are: play only checkpoints you trust.
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..api.constants import ENV_EVAL_EPISODES, ENV_EVAL_MAX_STEPS
from . import checkpoints
from .errors import ConfigError
from .pickles import as_mapping, read_pickle

if TYPE_CHECKING:
    from .recipes import Recipe

log = logging.getLogger(__name__)

# Where the RLlib checkpoint keeps what `play` needs (Algorithm.save_to_path's layout).
ALGORITHM_CTOR_FILE = "class_and_ctor_args.pkl"
RLLIB_MARKER = "rllib_checkpoint.json"
MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")

# The end-of-training evaluation: on by default, 20 seeded games (enough for a mean and a spread that say
# something) and a GIF of one more. A job turns it off, down or up through its environment (spec.env in
# the manifest; the shell's for `rljob run`).
DEFAULT_EVAL_EPISODES = 20
EVAL_SEED = 0
# Agent steps (4 emulator frames each in Atari): 27,000 are the 108,000 frames at which ALE ends a game
# itself, so no game is cut short; a test turns it down through the environment.
DEFAULT_EVAL_MAX_STEPS = 27_000
EVAL_GIF = "evaluation.gif"
EVAL_FILE = "evaluation.json"  # the score card, next to the GIF (status.progress.evaluation's fields)

# The GIF keeps every GIF_EVERY-th agent step: Pong at 60 Hz with 4 frames skipped per step then plays
# at 7.5 frames/s in real time, smooth enough to follow the ball, and a game stays near a megabyte.
GIF_EVERY = 2
GIF_MAX_FRAMES = 2000  # memory bound for very long episodes: the rest of the game is not drawn
SCORE_STRIP_PX = 14
ATARI_HZ = 60.0


@dataclass(frozen=True)
class PolicyCheckpoint:
    """One RLlib checkpoint and the environment its algorithm trained on."""

    path: Path
    env: str
    env_config: dict[str, Any]
    iteration: int | None = None
    recipe: str | None = None


@dataclass
class Evaluation:
    """Returns of the played episodes; `frames` are the first episode's RGB screens when recorded."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)
    frames: list[Any] = field(default_factory=list)
    frame_returns: list[float] = field(default_factory=list)
    render_error: str | None = None  # why no frames were recorded (e.g. CartPole's renderer needs pygame)
    gif: Path | None = None  # where after_training wrote the GIF
    seed: int | None = None  # game i was reset with seed + i
    card: Path | None = None  # where after_training wrote the figures (EVAL_FILE)
    iteration: int | None = None  # of the checkpoint played, when known

    @property
    def mean_return(self) -> float:
        return sum(self.returns) / len(self.returns) if self.returns else math.nan

    @property
    def std_return(self) -> float:
        """The spread of the games' returns (population standard deviation)."""
        if not self.returns:
            return math.nan
        mean = self.mean_return
        return math.sqrt(sum((r - mean) ** 2 for r in self.returns) / len(self.returns))

    @property
    def wins(self) -> int:
        """Games with a positive return: in a two-player game such as Pong, the games the agent won."""
        return sum(1 for r in self.returns if r > 0)

    @property
    def losses(self) -> int:
        return sum(1 for r in self.returns if r < 0)

    def summary(self) -> dict[str, Any]:
        """status.progress.evaluation's fields (api.models.EvaluationSummary), snake_case."""
        return {
            "games": len(self.returns),
            "mean_return": round(self.mean_return, 3),
            "std_return": round(self.std_return, 3),
            "min_return": min(self.returns),
            "max_return": max(self.returns),
            "wins": self.wins,
            "losses": self.losses,
            "cut_off": sum(self.truncated),
            "seed": self.seed,
            "iteration": self.iteration,
        }


def find_checkpoint(target: Path) -> Path:
    """The checkpoint `target` names: a checkpoint folder, or the latest one in a checkpoints or run folder.

    Accepts what users have at hand: runs/NAME/ from `rljob run`, its checkpoints/, a folder from
    `rljob fetch`, or one iteration-NNNNNN folder. Raises ConfigError with one line otherwise.
    """
    if not target.exists():
        raise ConfigError(f"{target}: no such file or directory")
    if not target.is_dir():
        raise ConfigError(f"{target}: not a checkpoint folder (expected an iteration-NNNNNN folder or a run folder)")
    if (target / RLLIB_MARKER).is_file():
        return target
    for folder in (target, target / "checkpoints"):
        found = checkpoints.latest(folder)
        if found is not None:
            return found.path
    raise ConfigError(
        f"{target}: no checkpoint here (neither an RLlib checkpoint with {RLLIB_MARKER} "
        "nor a folder with complete iteration-NNNNNN checkpoints)"
    )


def read_checkpoint(path: Path) -> PolicyCheckpoint:
    """The env name and env_config from the algorithm config pickled in the checkpoint."""
    ctor = path / ALGORITHM_CTOR_FILE
    module_dir = path.joinpath(*MODULE_PATH)
    if not ctor.is_file() or not module_dir.is_dir():
        raise ConfigError(f"{path}: not a checkpoint of an RLlib algorithm with a single policy (no {ctor.name} "
                          f"or {'/'.join(MODULE_PATH)})")
    try:
        saved = read_pickle(ctor)
        args, kwargs = saved["ctor_args_and_kwargs"]
        config = as_mapping(args[0] if args else kwargs["config"])
        env = config["env"]
        env_config = dict(config.get("env_config") or {})
    except Exception as exc:  # a truncated file, another RLlib version's layout
        raise ConfigError(f"{ctor}: cannot read the algorithm config: {type(exc).__name__}: {exc}") from None
    if not isinstance(env, str):
        raise ConfigError(f"{path}: the algorithm's env is {env!r}, not a registered name this command can rebuild")
    info = checkpoints.read_info(path)
    return PolicyCheckpoint(
        path=path, env=env, env_config=env_config,
        iteration=info.iteration if info else checkpoints.iteration_of(path),
        recipe=info.recipe if info else None,
    )


def load_module(checkpoint: PolicyCheckpoint) -> Any:
    """The trained policy network (observations in, action logits out) on the CPU, in inference mode; no Ray."""
    from .policy import load_policy

    return load_policy(checkpoint.path.joinpath(*MODULE_PATH))


def evaluation_recipe(checkpoint: PolicyCheckpoint) -> Recipe | None:
    """The built-in recipe that trained on the checkpoint's env (its own recipe, when the checkpoint names it), which
    makes the envs to play it in; None for an env no recipe trains on (a script's), made by gymnasium."""
    from ..api.models import RECIPES
    from .recipes import get_recipe

    names = [checkpoint.recipe] if checkpoint.recipe in RECIPES else []
    for name in [*names, *RECIPES]:
        recipe = get_recipe(name)
        if recipe.env_name == checkpoint.env:
            return recipe
    return None


def _recipe_env(checkpoint: PolicyCheckpoint, make: Callable[[Recipe], Any]) -> Any:
    """What `make` builds with the checkpoint's recipe, or None; a failure becomes one ConfigError line."""
    recipe = evaluation_recipe(checkpoint)
    if recipe is None:
        return None
    try:
        return make(recipe)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"cannot create {checkpoint.env_config.get('env_id', checkpoint.env)!r}: "
                          f"{type(exc).__name__}: {exc}") from None


def make_env(checkpoint: PolicyCheckpoint, module: Any) -> Any:
    """The env the policy trained on, rendering RGB frames; one env, not a vector: its recipe's, else gymnasium's."""
    import gymnasium as gym

    env = _recipe_env(checkpoint, lambda recipe: recipe.evaluation_env(checkpoint.env_config, module))
    if env is not None:
        return env
    try:
        return gym.make(checkpoint.env, render_mode="rgb_array", **checkpoint.env_config)
    except Exception as exc:
        raise ConfigError(f"cannot create the env {checkpoint.env!r}: {type(exc).__name__}: {exc}") from None


def play_games(
    checkpoint: PolicyCheckpoint, module: Any, games: int, max_steps: int | None, *, seed: int, greedy: bool = True
) -> Evaluation:
    """`games` whole games, game i reset with seed + i; one cut off at `max_steps` counts with its score so far."""
    env = _recipe_env(checkpoint, lambda recipe: recipe.evaluation_vector_env(checkpoint.env_config, module, games))
    if env is not None:
        try:
            result = play_vector(env, module, games, max_steps, seed=seed, greedy=greedy)
        finally:
            env.close()
    else:
        env = make_env(checkpoint, module)
        try:
            result = play(env, policy_fn(module, greedy, seed), games, max_steps, record=False, seed=seed)
        finally:
            env.close()
    result.seed = seed
    return result


def play_vector(env: Any, module: Any, games: int, max_steps: int | None, *, seed: int, greedy: bool) -> Evaluation:
    """Plays one game in each of the vector env's envs at once, one batched forward pass per step."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed)
    returns = np.zeros(games, np.float64)
    lengths = np.zeros(games, np.int64)
    done = np.zeros(games, bool)
    cut = np.zeros(games, bool)
    obs, info = env.reset(seed=seed)
    while not done.all():
        with torch.inference_mode():
            logits = module(torch.from_numpy(obs)).float()
            chosen = logits.argmax(-1) if greedy else torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)[:, 0]
        obs, rewards, terminated, truncated, info = env.step(chosen.numpy().astype(np.int64))
        ids = np.asarray(info["env_id"], np.int64)
        live = ~done[ids]
        playing = ids[live]
        returns[playing] += rewards[live]
        lengths[playing] += 1
        ended = playing[(terminated | truncated)[live]]
        cut[playing[truncated[live]]] = True
        done[ended] = True
        if max_steps is not None:
            over = playing[(lengths[playing] >= max_steps) & ~done[playing]]
            cut[over] = done[over] = True
    return Evaluation(returns=[float(r) for r in returns], lengths=[int(n) for n in lengths],
                      truncated=[bool(c) for c in cut])


def film(checkpoint: PolicyCheckpoint, module: Any, gif: Path, *, seed: int, max_steps: int | None,
         greedy: bool = True, gif_every: int = GIF_EVERY) -> tuple[Evaluation, int]:
    """One more game, filmed through gymnasium's renderer into `gif`; (the game, frames written).

    Raises ConfigError when the env cannot render (its reason), OSError when the GIF cannot be written.
    """
    env = make_env(checkpoint, module)
    try:
        result = play(env, policy_fn(module, greedy, seed), 1, max_steps, record=True, seed=seed, gif_every=gif_every)
        result.seed = seed
        if not result.frames:
            raise ConfigError(f"no frames were recorded: {result.render_error or 'nothing was played'}")
        return result, write_gif(result, gif, frame_ms=frame_ms(env, gif_every))
    finally:
        env.close()


def policy_fn(module: Any, greedy: bool, seed: int | None) -> Callable[[Any], int]:
    """obs -> action: the argmax of the action logits (greedy) or a draw from them."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))

    def act(obs: Any) -> int:
        with torch.inference_mode():
            batch = torch.from_numpy(np.asarray(obs)[None])
            logits = module(batch)[0]
            if greedy:
                return int(logits.argmax())
            return int(torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator))

    return act


def play(
    env: Any,
    act: Callable[[Any], int],
    episodes: int,
    max_steps: int | None,
    *,
    record: bool = True,
    seed: int | None = None,
    gif_every: int = GIF_EVERY,
) -> Evaluation:
    """Plays `episodes` episodes; an episode cut off at `max_steps` counts with the score it had."""
    import gymnasium as gym

    if not isinstance(env.action_space, gym.spaces.Discrete):
        raise ConfigError(f"only discrete actions can be played; this env's action space is {env.action_space}")
    result = Evaluation()
    for episode in range(episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + episode)
        total, steps, done, cut = 0.0, 0, False, False
        recording = record and episode == 0 and _keep_frame(env, result, total)
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated
            if max_steps is not None and steps >= max_steps and not done:
                done = cut = True
            if recording and (steps % gif_every == 0 or done) and len(result.frames) < GIF_MAX_FRAMES:
                recording = _keep_frame(env, result, total)
        result.returns.append(total)
        result.lengths.append(steps)
        result.truncated.append(cut or bool(truncated))
    return result


def _keep_frame(env: Any, result: Evaluation, total: float) -> bool:
    """Records the screen; False (and why, in the result) when the env cannot render: the returns still count."""
    try:
        frame = env.render()
    except Exception as exc:  # gymnasium's classic-control renderers need pygame, which the trainer does not ship
        result.render_error = f"{type(exc).__name__}: {exc}"
        return False
    if frame is None:
        result.render_error = "the env rendered no frame"
        return False
    result.frames.append(frame)
    result.frame_returns.append(total)
    return True


def write_gif(evaluation: Evaluation, path: Path, *, frame_ms: int = 133, title: str = "") -> int:
    """An animated GIF of the recorded episode with the running return above the picture; returns the frame count.

    Written under a temporary name and renamed, so a reader of the checkpoint volume never sees half a GIF.
    """
    from PIL import Image, ImageDraw

    if not evaluation.frames:
        raise ConfigError(f"no frames were recorded: {evaluation.render_error or 'nothing was played'}")
    images = []
    for frame, total in zip(evaluation.frames, evaluation.frame_returns, strict=True):
        picture = Image.fromarray(frame).convert("RGB")
        canvas = Image.new("RGB", (picture.width, picture.height + SCORE_STRIP_PX), (0, 0, 0))
        canvas.paste(picture, (0, SCORE_STRIP_PX))
        ImageDraw.Draw(canvas).text((2, 1), f"{title}return {total:+g}".strip(), fill=(255, 255, 255))
        images.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    images[0].save(partial, format="GIF", save_all=True, append_images=images[1:], duration=frame_ms, loop=0)
    partial.replace(path)
    return len(images)


def frame_ms(env: Any, gif_every: int) -> int:
    """GIF frame time that plays the game in real time: skipped frames x kept steps at the env's frame rate."""
    if getattr(env.unwrapped, "ale", None) is not None:
        fps, skip = ATARI_HZ, 4  # the emulator's frame rate, whatever the env's render metadata says
    else:
        fps, skip = float((getattr(env, "metadata", None) or {}).get("render_fps") or 0) or 30.0, 1
    return max(20, round(1000.0 * skip * gif_every / fps))


def describe(evaluation: Evaluation, greedy: bool) -> str:
    n = len(evaluation.returns)
    if not n:
        return "no games played"
    cut = sum(evaluation.truncated)
    note = f", {cut} cut off at the step limit" if cut else ""
    seeds = "" if evaluation.seed is None else f", seeds {evaluation.seed}-{evaluation.seed + n - 1}"
    return (f"mean return {evaluation.mean_return:+.2f} +- {evaluation.std_return:.2f} over {n} game{'s' if n != 1 else ''} "
            f"(min {min(evaluation.returns):+g}, max {max(evaluation.returns):+g}; {evaluation.wins} won, "
            f"{evaluation.losses} lost; {'greedy' if greedy else 'sampled'} actions{seeds}{note})")


def eval_settings(env: Mapping[str, str]) -> tuple[int, int]:
    """(episodes, max steps) of the end-of-training evaluation from the job's environment."""
    def number(name: str, default: int) -> int:
        text = env.get(name, "").strip()
        if not text:
            return default
        try:
            value = int(text)
        except ValueError:
            log.warning("%s=%r is not a whole number; using %d", name, text, default)
            return default
        return max(0, value)

    return number(ENV_EVAL_EPISODES, DEFAULT_EVAL_EPISODES), number(ENV_EVAL_MAX_STEPS, DEFAULT_EVAL_MAX_STEPS)


def after_training(checkpoint: str | Path | None, gif: Path, env: Mapping[str, str]) -> Evaluation | None:
    """The evaluation that ends a successful run, and a film of one more game; never fails the run (a warning).

    Greedy, like a deployed policy, seeds from 0. Returns None when it is turned off or could not run.
    """
    games, max_steps = eval_settings(env)
    if not games or checkpoint is None:
        return None
    try:
        ckpt = read_checkpoint(Path(checkpoint))
        module = load_module(ckpt)
        result = play_games(ckpt, module, games, max_steps or None, seed=EVAL_SEED)
        result.iteration = ckpt.iteration
    except Exception as exc:  # a trained policy matters more than its score card
        log.warning("evaluation after training skipped: %s", exc)
        return None
    try:
        _, frames = film(ckpt, module, gif, seed=EVAL_SEED, max_steps=max_steps or None)
        result.gif = gif
        shown = f"{frames}-frame GIF of one more game: {gif}"
    except Exception as exc:  # no renderer, a full or read-only volume
        result.render_error = str(exc)
        shown = f"no GIF ({exc})"
    log.info("evaluation of %s: %s; %s", Path(checkpoint).name, describe(result, True), shown)
    try:
        result.card = gif.parent / EVAL_FILE
        write_card(result, result.card)
    except OSError as exc:
        result.card = None
        log.warning("evaluation results not written: %s", exc)
    return result


def write_card(result: Evaluation, path: Path) -> None:
    """The evaluation's figures and each game's return, as JSON; replaced whole, never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    partial.write_text(json.dumps({**result.summary(), "returns": result.returns, "lengths": result.lengths},
                                  indent=1) + "\n")
    partial.replace(path)


EXPORT_FORMATS = {"torchscript": ".pt", "torch-export": ".pt2"}


def export_policy(module: Any, path: Path, fmt: str) -> Path:
    """The policy network alone, observations in, action logits out, for serving without rljob or RLlib.

    Inputs are batches in the module's own observation layout (uint8 frame stacks for the lean Atari
    runner's policies: the scaling is part of the exported graph). "torchscript" is a traced TorchScript file
    (torch.jit.load); "torch-export" a torch.export program with a dynamic batch size
    (torch.export.load), the format torch keeps developing.
    """
    import warnings

    import numpy as np
    import torch

    network = module.eval()
    # Two observations: a batch of one would let tracing and export specialise the batch size to 1.
    example = torch.from_numpy(np.stack([module.observation_space.sample() for _ in range(2)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated; it still loads everywhere
        if fmt == "torchscript":
            with torch.no_grad():
                torch.jit.trace(network, example, check_trace=False).save(str(path))
        elif fmt == "torch-export":
            from torch.export import Dim, export

            program = export(network, (example,), dynamic_shapes={"obs": {0: Dim("batch")}})
            torch.export.save(program, str(path))
        else:
            raise ConfigError(f"unknown export format {fmt!r} (choose from {', '.join(EXPORT_FORMATS)})")
    return path
