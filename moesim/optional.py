"""Optional dependencies: one place says which extra installs each.

``require("torch")`` imports a module or raises a ``MoesimInputError`` naming the extra to install;
``missing_extra`` turns a ``ModuleNotFoundError`` raised deeper down (a module-level ``import torch``
in the live executor, say) into the same one line at the command line.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from moesim.errors import MoesimInputError

# top-level module -> the extra of pyproject.toml that installs it
EXTRAS: dict[str, str] = {
    "torch": "torch",
    "transformers": "torch",
    "safetensors": "torch",
    "huggingface_hub": "torch",
    "tokenizers": "torch",
    "ray": "ray",
}


class MissingDependencyError(MoesimInputError):
    """An optional package this command needs is not installed."""


def install_hint(module: str) -> str:
    extra = EXTRAS.get(module.split(".")[0])
    return f"pip install 'moesim[{extra}]'" if extra else f"pip install {module.split('.')[0]}"


def message(module: str, purpose: str | None = None) -> str:
    need = f" (needed for {purpose})" if purpose else ""
    return f"the optional package {module.split('.')[0]} is not installed{need}; {install_hint(module)}"


def require(module: str, purpose: str | None = None) -> ModuleType:
    """Import ``module`` or fail with one line naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = (exc.name or module).split(".")[0]
        if top != module.split(".")[0] and top not in EXTRAS:
            raise  # the package is there but one of its own imports is broken: not ours to explain
        raise MissingDependencyError(message(top, purpose)) from None


def missing_extra(exc: BaseException) -> str | None:
    """The one-line message for a missing known optional package, else None."""
    if not isinstance(exc, ModuleNotFoundError):  # "cannot import name" is a version problem, not absence
        return None
    name = getattr(exc, "name", None) or ""
    top = name.split(".")[0]
    if top not in EXTRAS:
        return None
    return message(top)
