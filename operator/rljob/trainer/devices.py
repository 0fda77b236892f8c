"""Whether the GPUs a pod was given can be used, checked before Ray is told it has them.

A head pod whose `spec.head.gpus` the node granted (the scheduler counted the node's `nvidia.com/gpu`) may still
see no CUDA device: an image whose torch has no CUDA, or a node whose NVIDIA driver, container runtime or device plugin does not
hand the GPU to the container. Ray would then start with GPUs it does not have, and the learner would fail minutes
later deep inside torch, once per retry; this says what is wrong at once, as a configuration error.
"""

from __future__ import annotations

from .errors import ConfigError


def check_gpus(wanted: int, seen: int, cuda_build: str | None) -> None:
    """`seen`: the CUDA devices torch finds; `cuda_build`: the CUDA version torch was built for (None: CPU-only)."""
    if wanted <= 0 or seen >= wanted:
        return
    asked = f"spec.head.gpus asks for {wanted} GPU(s), but this pod sees {seen} CUDA device(s)"
    if cuda_build is None:
        raise ConfigError(f"{asked}: the image's torch is built without CUDA; give spec.image an image whose torch "
                          "is (the project's runtime images are), or set spec.head.gpus to 0")
    raise ConfigError(f"{asked} (torch built for CUDA {cuda_build}): the node's NVIDIA driver, container runtime or "
                      "device plugin does not hand the GPU to the container; check `nvidia-smi` on the node and "
                      "the device plugin's pods")


def check_visible_gpus(wanted: int) -> None:
    """`check_gpus` with what torch finds in this process."""
    if wanted <= 0:
        return
    import torch

    check_gpus(wanted, torch.cuda.device_count(), torch.version.cuda)
