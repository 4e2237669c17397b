"""Names a package exports but imports only on first use (PEP 562), so that importing the package stays cheap.

Used by the packages whose public names pull in heavy dependencies (TensorFlow for ``lookalike.embedder`` and
``lookalike.bundle``, FAISS and scikit-learn for ``lookalike.index``): ``lookalike --help`` then starts at once.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` that imports ``names[name]`` (a relative module) on first use.

    Example: ``__getattr__ = lazy_exports(__name__, {"Bundle": ".bundle"})``.
    """

    def __getattr__(name: str):
        if name in names:
            return getattr(import_module(names[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
