"""A bundle with planted data-health issues, built once per test session and shared by the audit test modules.

A copy of the session's small bundle (``conftest.bundle_path``) to which ``add_files`` adds:

- an exact copy of one indexed image, in another folder (an exact duplicate, and in the ``added`` split);
- a held-out ``cook`` image labelled ``arthur`` (a flipped label).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Injected:
    bundle: Path
    original: Path  # the indexed image that was copied
    copy: Path  # its exact copy
    flipped: Path  # the cook image labelled arthur


def injected_bundle(base: Path, bundle_path: Path, small_dataset) -> Injected:
    """Build (once: ``base`` is reused when complete) the bundle with the planted issues under ``base``."""
    from lookalike.bundle import Bundle, add_files

    root, queries = small_dataset
    original = min((root / "autogun").glob("*.png"))
    copy, flipped = base / "extra" / "autogun" / "copy-of-autogun.png", queries["cook"][0]
    injected = Injected(base / "injected.bundle", original, copy, flipped)
    if (base / "complete").is_file():
        return injected
    shutil.rmtree(base, ignore_errors=True)
    copy.parent.mkdir(parents=True)
    shutil.copy(original, copy)
    shutil.copytree(bundle_path, injected.bundle)
    bundle = Bundle.load(injected.bundle)
    add_files(bundle, [copy])
    add_files(bundle, [flipped], label="arthur")
    (base / "complete").write_text("ok")
    return injected
