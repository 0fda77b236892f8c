"""`rljob play CHECKPOINT_OR_RUN_DIR`: watch a trained policy play, and export it (see rljob.trainer.evaluate)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from .arguments import positive_int

EXIT_BAD_INPUT = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "play",
        help="play a trained policy: returns, a GIF of a game, an exported network",
        description="Restores the policy from a checkpoint (or the latest in a run folder such as runs/NAME/, "
        "its checkpoints/ or a folder from `rljob fetch`), plays seeded games (game i reset with seed + i) in the "
        "env it trained on with the same preprocessing (an Atari policy in the training's own vector env), prints "
        "each game's return, the mean, the spread, wins and losses, and writes a GIF of one more game. "
        "Needs torch and ALE, not Ray: pip install 'rljob[play]' (the trainer extra has them too). Checkpoints "
        "are pickles: play only checkpoints you trust. Exit codes: 0 played, 1 packages missing or an error, "
        "2 no usable checkpoint.",
    )
    p.add_argument("path", type=Path, metavar="CHECKPOINT_OR_RUN_DIR")
    p.add_argument("--games", "--episodes", dest="episodes", type=positive_int, default=20, metavar="N",
                   help="games to play and score (default 20)")
    p.add_argument("--max-steps", type=positive_int, default=None, metavar="N",
                   help="cut each episode off after N agent steps (default: the env's own limit)")
    p.add_argument("--sample", action="store_true",
                   help="draw actions from the policy's distribution (default: greedy, its most likely action)")
    p.add_argument("--seed", type=int, default=0, help="seed of the env resets and the sampled actions (default 0)")
    gif = p.add_mutually_exclusive_group()
    gif.add_argument("--gif", type=Path, metavar="OUT.gif",
                     help="where the GIF of a filmed game (seed --seed) goes (default: play-<checkpoint>.gif here)")
    gif.add_argument("--no-gif", action="store_true", help="write no GIF")
    p.add_argument("--gif-every", type=positive_int, default=None, metavar="K",
                   help="keep every K-th step in the GIF (default 2: half the steps, still played in real time)")
    p.add_argument("--export", choices=("torchscript", "torch-export"), default=None,
                   help="also write the policy network alone (observations in, action logits out) for serving")
    p.add_argument("--export-path", type=Path, default=None, metavar="FILE",
                   help="where --export writes (default: policy-<checkpoint>.pt / .pt2 here)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return play_command(args, sys.stdout, sys.stderr)


def play_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from ..trainer import evaluate
    from ..trainer.errors import TrainerError
    from .needs import missing_extra

    def fail(line: str, code: int) -> int:
        err.write(f"rljob play: error: {line}\n")
        return code

    problem = missing_extra("play")
    if problem:
        return fail(problem, 1)
    # The checkpoint is found and read before torch is imported: a wrong path fails in a moment.
    try:
        checkpoint = evaluate.read_checkpoint(evaluate.find_checkpoint(args.path))
    except TrainerError as exc:
        return fail("; ".join(exc.lines), EXIT_BAD_INPUT)
    greedy = not args.sample
    gif_every = args.gif_every or evaluate.GIF_EVERY
    name = checkpoint.path.name
    what = f"{checkpoint.recipe} " if checkpoint.recipe else ""
    out.write(f"{what}checkpoint {checkpoint.path}"
              f"{f' (iteration {checkpoint.iteration})' if checkpoint.iteration is not None else ''}\n")
    out.flush()
    try:
        module = evaluate.load_module(checkpoint)
        if args.export:
            target = args.export_path or Path(f"policy-{name}{evaluate.EXPORT_FORMATS[args.export]}")
            evaluate.export_policy(module, target, args.export)
            out.write(f"exported the policy network ({args.export}): {target}\n")
        result = evaluate.play_games(checkpoint, module, args.episodes, args.max_steps, seed=args.seed, greedy=greedy)
        for i, (ret, steps, cut) in enumerate(zip(result.returns, result.lengths, result.truncated, strict=True)):
            out.write(f"game {i + 1} (seed {args.seed + i}): return {ret:+g} in {steps} steps{' (cut off)' if cut else ''}\n")
        out.write(evaluate.describe(result, greedy) + "\n")
        out.flush()
        if not args.no_gif:
            gif = args.gif or Path(f"play-{name}.gif")
            try:
                filmed, frames = evaluate.film(checkpoint, module, gif, seed=args.seed, max_steps=args.max_steps,
                                               greedy=greedy, gif_every=gif_every)
                out.write(f"GIF of one more game (seed {args.seed}, return {filmed.returns[0]:+g}, {frames} frames): {gif}\n")
            except TrainerError as exc:
                err.write(f"rljob play: no GIF: {'; '.join(exc.lines)}\n")
    except TrainerError as exc:
        return fail("; ".join(exc.lines), exc.exit_code)
    except OSError as exc:  # an unwritable GIF or export path
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "), 1)
    out.flush()
    return 0
