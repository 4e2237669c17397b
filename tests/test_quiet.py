"""quietly(): native standard error is silenced while loading and always comes back, also across threads."""

import logging
import os
import threading

import pytest
from lookalike.embedder.quiet import quietly


def _stderr_identity() -> tuple[int, int]:
    info = os.fstat(2)
    return info.st_dev, info.st_ino


def _devnull_identity() -> tuple[int, int]:
    info = os.stat(os.devnull)
    return info.st_dev, info.st_ino


@pytest.fixture
def not_verbose():
    logger = logging.getLogger("lookalike")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


def test_quietly_silences_and_restores(not_verbose):
    before = _stderr_identity()
    assert before != _devnull_identity()
    with quietly():
        assert _stderr_identity() == _devnull_identity()
        with quietly():  # nested
            assert _stderr_identity() == _devnull_identity()
        assert _stderr_identity() == _devnull_identity()
    assert _stderr_identity() == before


def test_overlapping_threads_restore_standard_error(not_verbose):
    """Thread A enters, B enters, A leaves, B leaves: the order that left fd 2 on /dev/null when each block
    saved and restored its own copy."""
    before = _stderr_identity()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def a():
        with quietly():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def b():
        a_in.wait(10)
        with quietly():
            b_in.set()
            a_out.wait(10)
            seen["inside b after a left"] = _stderr_identity()

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert all(flag.is_set() for flag in (a_in, b_in, a_out))
    assert seen["inside b after a left"] == _devnull_identity()  # still quiet while b's block is open
    assert _stderr_identity() == before
