"""`pong`: Atari Pong, an instance of the Atari recipe, with its layouts on one GPU machine, on GPU and CPU nodes,
and on a laptop.

Everything but the name, the game and the layouts is `AtariRecipe`'s (recipes/atari.py): the same
arguments, defaults and configs as before the recipe was made generic, so the examples and the results
in benchmarks/README.md hold.
"""
from __future__ import annotations

from .atari import AtariRecipe, frame_stack_env_to_module, frame_stack_learner

LAYOUTS = (
    "Layouts. One machine with 1 GPU and 16 CPUs (examples/pong.yaml): head gpus 1, cpu 15, no workers; args "
    "--cpus-per-env-runner 4 --gpus-per-env-runner 0.1: the learner on 0.7 of the GPU, the driver and 2 aggregator "
    "actors on 3 CPUs, three env runners of 128 envs whose policy infers on 0.1 of the GPU each, so their 4 CPUs only "
    "emulate. Separate GPU and CPU nodes (examples/pong-cpu-workers.yaml): head gpus 1, cpu 4; 3 workers of 4 CPUs; "
    "args --cpus-per-env-runner 4 (inference on the workers' CPUs). A laptop's CPUs (examples/pong-local.yaml, make "
    "demo): args --algorithm PPO --model small "
    "--train-batch-size 4096 --num-epochs 2 --minibatch-size 128 --lr 0.0005 --clip-param 0.2 --grad-clip 0.5 "
    "--cpus-per-env-runner 2 --envs-per-env-runner 32 (CleanRL's Atari PPO settings, with half its learner work for "
    "as many updates, and twice its learning rate and clip for the few updates ten minutes allow): on CPUs the "
    "learner is the bottleneck, and PPO's learner (in the driver) and env runner take the same cores in turn."
)

RECIPE = AtariRecipe(
    "pong", "ale_py:ALE/Pong-v5",
    summary="Atari Pong (ale-py), APPO or PPO on the new API stack, sampled by the lean Atari env runner.",
    epilog=LAYOUTS,
)

# The stock runner's checkpoints pickle its frame-stacking connectors' factories by these paths, where they
# were defined before AtariRecipe: resuming or restoring such a checkpoint imports them from here.
_frame_stack_env_to_module = frame_stack_env_to_module
_frame_stack_learner = frame_stack_learner
