"""Reading an RLlib checkpoint's pickles as data, without importing Ray or the recipes' modules.

RLlib pickles the algorithm's config and each module's constructor arguments with classes by reference
(its own, the recipes' env runners and modules, which import Ray). `rljob play` needs only plain values from
them (the env's name and config, the spaces, the model config) and runs where Ray is not installed. So
numpy's, gymnasium's and the builtin containers are constructed, and every other class becomes a `Pickled`
stand-in that keeps what was pickled (a dataclass's fields stay readable). Nothing of those classes runs.
This is not a sandbox: checkpoints are still pickles, to be played only when trusted.
"""
from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The packages whose classes a checkpoint's pickles may really construct: arrays, spaces and containers.
IMPORTED_PACKAGES = frozenset({"numpy", "gymnasium", "collections", "copyreg", "_codecs"})
PLAIN_BUILTINS = frozenset({"set", "frozenset", "slice", "range", "complex", "bytes", "bytearray", "tuple", "list",
                            "dict", "int", "float", "bool", "str", "object"})


class Pickled:
    """Stands for an object whose class is not imported here: the arguments it was built with and its state.

    A subclass is made per pickled class (`module` and `name` say which).
    """

    module = ""
    name = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> Pickled:
        obj = super().__new__(cls)
        obj.args, obj.kwargs, obj.state = args, kwargs, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """The arguments were kept by __new__, which is all that copyreg's __newobj__ calls."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def fields(self) -> dict[str, Any]:
        """The pickled attributes (a dataclass's fields), from __dict__ and __slots__ state alike."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2:
            return {**(state[0] or {}), **(state[1] or {})}
        return dict(state) if isinstance(state, dict) else {}


class CheckpointUnpickler(pickle.Unpickler):
    """Constructs numpy's, gymnasium's and plain containers; everything else becomes a `Pickled` stand-in."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._stand_ins: dict[tuple[str, str], type[Pickled]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] in IMPORTED_PACKAGES or (module == "builtins" and name in PLAIN_BUILTINS):
            return super().find_class(module, name)
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name.rsplit(".", 1)[-1], (Pickled,), {"module": module, "name": name})
        return self._stand_ins[key]


def read_pickle(path: Path) -> Any:
    """A checkpoint's pickle, read with `CheckpointUnpickler`."""
    with path.open("rb") as f:
        return CheckpointUnpickler(f).load()


def as_mapping(value: Any) -> Mapping[str, Any]:
    """A config as pickled: a dict, or a dataclass such as RLlib's DefaultModelConfig (a stand-in here); else empty."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, Pickled):
        return value.fields()
    return {}
