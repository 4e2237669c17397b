"""The answer to one query image, as ``lookalike search`` prints it and ``POST /api/search`` returns it.

Both front ends call :func:`search_image` and serialise :meth:`QueryResult.to_dict`, so the command line's
``--json`` object and the HTTP API's response are the same object for the same image and options.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .bundle import Bundle, QueryResult


def search_image(
    bundle: Bundle, image: str | os.PathLike, *, k: int = 5, unknown_threshold: float | None = None
) -> QueryResult:
    """Search ``bundle`` for the look-alikes of one image file.

    Parameters
    ----------
    bundle : Bundle
    image : str or path-like
        An image file in any format :func:`lookalike.data.load_image` reads.
    k : int
        Number of nearest images and of nearest characters returned, at least 1.
    unknown_threshold : float, optional
        Match score (see :attr:`QueryResult.match_score`) below which the best match is "no close match" (default:
        the bundle's calibrated threshold, see :attr:`Bundle.open_set`).

    Returns
    -------
    QueryResult
        Its :meth:`~QueryResult.to_dict` is the JSON object of ``lookalike search --json``.

    Raises
    ------
    ValueError
        ``k`` is below 1.
    ImageDecodeError
        The file cannot be read (missing, not an image, truncated, more than ``MAX_PIXELS`` pixels).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1; got {k}")
    return bundle.query_files([image], k=k, n_characters=k, unknown_threshold=unknown_threshold)[0]
