"""Why this match: heatmaps over a query and its best match of the regions that make up their cosine similarity.

The similarity of two embeddings is split exactly into one share per location of the backbone's last feature
map, for each image (Stylianou et al., "Visualizing Deep Similarity Networks", WACV 2019, arXiv:1901.00536; see
:mod:`lookalike.embedder.explain` for the derivation on lookalike's head): the query's shares sum to the cosine
similarity, and so do the match's. A location with a large share looks like the other image as a whole; its
heatmap is hot there.

The match's pixels come from its file (``match_from="file"``, what the command line does) or from the bundle's
thumbnail of it (``"thumbnail"``, what the web app does: it never opens the image paths a bundle names, see
:mod:`lookalike.app.server`).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data import load_image
from ..data.thumbnails import THUMBNAIL_SIZE, decode_thumbnail
from ..embedder.explain import location_embeddings
from .storage import BundleError

if TYPE_CHECKING:
    from ..index.search import Hit
    from .bundle import Bundle, QueryResult

#: Colour map of the heatmaps (matplotlib's name) and the weight of the colour over the image where the heatmap
#: is 0 and where it is 1 (in between, linear): a region that adds nothing stays visible.
COLORMAP = "jet"
OVERLAY_ALPHA = (0.15, 0.65)


@dataclass(frozen=True)
class SimilarityExplanation:
    """Where two images are alike: each image's per-region share of their cosine similarity.

    Attributes
    ----------
    query_image, match_image : uint8 ndarray of shape (s, s, 3)
        The two images as the embedder saw them (s = the bundle's image size).
    query_contributions, match_contributions : float32 ndarray of shape (h, w)
        Share of the cosine similarity of each location of the backbone's last feature map (7 x 7 for
        MobileNetV2 at 224 px; location (i, j) covers the image around pixel ((i + 0.5) s / h, (j + 0.5) s / w));
        a negative share is a region that lowers it. The query's shares sum to ``similarity``, the match's to
        ``match_similarity``.
    similarity : float
        Cosine similarity, in [-1, 1], of the query's embedding (Keras, from ``query_image``) and the match's
        embedding (the one in the index, when explained with :func:`explain_result`): the search's score,
        within about 1e-4.
    match_similarity : float
        The same with the match embedded from ``match_image``: equal to ``similarity`` (within 1e-4) when the
        match's pixels come from its file, a few hundredths off when they come from its 128 px thumbnail.
    query_title, match_title, caption : str
        Text drawn by :meth:`to_image` above each image and under both.
    """

    query_image: np.ndarray
    match_image: np.ndarray
    query_contributions: np.ndarray
    match_contributions: np.ndarray
    similarity: float
    match_similarity: float
    query_title: str = "query"
    match_title: str = "match"
    caption: str = ""

    def heatmaps(self) -> tuple[np.ndarray, np.ndarray]:
        """The two heatmaps at image resolution, on one scale.

        Returns
        -------
        query_heatmap, match_heatmap : float32 ndarray of shape (s, s), in [0, 1]
            The positive shares, bilinearly upsampled to the image size and divided by the largest share of
            either image (so equal colours mean equal shares); 0 where a region adds nothing or lowers the
            similarity. All zeros when no region adds to it.
        """
        size = self.query_image.shape[0]
        peak = max(float(self.query_contributions.max()), float(self.match_contributions.max()))
        maps = []
        for shares in (self.query_contributions, self.match_contributions):
            scaled = np.clip(shares, 0.0, None) / peak if peak > 0 else np.zeros_like(shares)
            upsampled = Image.fromarray(scaled.astype(np.float32), mode="F").resize(
                (size, size), Image.Resampling.BILINEAR
            )
            maps.append(np.clip(np.asarray(upsampled, dtype=np.float32), 0.0, 1.0))
        return maps[0], maps[1]

    def overlays(self) -> tuple[np.ndarray, np.ndarray]:
        """Each image with its heatmap blended over it (:data:`COLORMAP`, weight :data:`OVERLAY_ALPHA`).

        Returns
        -------
        query_overlay, match_overlay : uint8 ndarray of shape (s, s, 3)
        """
        from matplotlib import colormaps

        colours, (low, high) = colormaps[COLORMAP], OVERLAY_ALPHA
        overlays = []
        for image, heat in zip((self.query_image, self.match_image), self.heatmaps()):
            alpha = (low + (high - low) * heat)[..., None]
            overlays.append(np.round((1 - alpha) * image + alpha * 255 * colours(heat)[..., :3]).astype(np.uint8))
        return overlays[0], overlays[1]

    def to_image(self, *, panel: int = 256) -> Image.Image:
        """Query | match side by side, each with its heatmap overlay and title, and the caption underneath.

        Parameters
        ----------
        panel : int
            Side of each image in pixels.

        Returns
        -------
        PIL.Image.Image
            RGB, ``2 * panel + 3 * margin`` pixels wide.
        """
        margin, line = 12, 20
        font = ImageFont.load_default(size=15)
        width = 2 * panel + 3 * margin
        titles = [_wrap(title, font, panel) for title in (self.query_title, self.match_title)]
        lines = [text for paragraph in self.caption.split("\n") for text in _wrap(paragraph, font, width - 2 * margin)]
        top = margin + line * max(len(t) for t in titles)
        canvas = Image.new("RGB", (width, top + panel + margin + line * len(lines) + margin // 2), "white")
        draw = ImageDraw.Draw(canvas)
        for n, (overlay, title) in enumerate(zip(self.overlays(), titles)):
            left = margin + n * (panel + margin)
            draw.multiline_text((left, margin), "\n".join(title), fill="black", font=font, spacing=line - 15)
            canvas.paste(Image.fromarray(overlay).resize((panel, panel), Image.Resampling.BILINEAR), (left, top))
        draw.multiline_text(
            (margin, top + panel + margin), "\n".join(lines), fill="black", font=font, spacing=line - 15
        )
        return canvas

    def to_png(self, *, panel: int = 256) -> bytes:
        """:meth:`to_image` encoded as PNG bytes."""
        buffer = io.BytesIO()
        self.to_image(panel=panel).save(buffer, format="PNG")
        return buffer.getvalue()


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """``text`` broken between words into lines no wider than ``width`` pixels in ``font``."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def explain_similarity(
    embedder, query: np.ndarray, match: np.ndarray, *, match_embedding: np.ndarray | None = None, **titles: str
) -> SimilarityExplanation:
    """The per-region shares of the cosine similarity of two images (see the module docstring).

    Parameters
    ----------
    embedder : Embedder
        A Keras embedder (:class:`lookalike.embedder.Embedder`).
    query, match : uint8 ndarray of shape (s, s, 3)
        RGB pixels, s = ``embedder.config.image_size`` (as :func:`lookalike.data.load_image` returns them).
    match_embedding : float32 ndarray of shape (d,), L2-normalised, optional
        The match's embedding to split the query's similarity against (e.g. the indexed one); default: the
        embedding of ``match``.
    **titles : str
        ``query_title``, ``match_title``, ``caption`` of the result.

    Returns
    -------
    SimilarityExplanation

    Raises
    ------
    ValueError
        An image does not have shape (s, s, 3).
    """
    locations = location_embeddings(embedder, np.stack([np.asarray(query), np.asarray(match)]).astype(np.uint8))
    query_embedding, match_from_pixels = locations.mean(axis=(1, 2))  # the two embeddings, (d,) each
    if match_embedding is None:
        match_embedding = match_from_pixels
    match_embedding = np.asarray(match_embedding, dtype=np.float32)
    if match_embedding.shape != query_embedding.shape:
        raise ValueError(f"match_embedding must have shape {query_embedding.shape}; got {match_embedding.shape}")
    n_locations = locations.shape[1] * locations.shape[2]
    query_shares = (locations[0] @ match_embedding / n_locations).astype(np.float32)
    match_shares = (locations[1] @ query_embedding / n_locations).astype(np.float32)
    return SimilarityExplanation(
        query_image=np.asarray(query, dtype=np.uint8),
        match_image=np.asarray(match, dtype=np.uint8),
        query_contributions=query_shares,
        match_contributions=match_shares,
        similarity=float(query_shares.sum(dtype=np.float64)),
        match_similarity=float(match_shares.sum(dtype=np.float64)),
        **titles,
    )


def match_pixels(bundle: Bundle, hit: Hit, *, match_from: Literal["file", "thumbnail"] = "file") -> np.ndarray:
    """The pixels of an indexed image at the bundle's image size, from its file or from the bundle's thumbnail.

    Returns
    -------
    uint8 ndarray of shape (s, s, 3)

    Raises
    ------
    ImageDecodeError
        ``"file"``: the image file cannot be read any more.
    BundleError
        ``"thumbnail"``: the bundle stores no (readable) thumbnail of it.
    ValueError
        ``match_from`` is neither ``"file"`` nor ``"thumbnail"``.
    """
    config = bundle.embedder.config
    size = config.image_size
    if match_from == "file":
        return load_image(hit.path, size, crop=config.crop_to_content)
    if match_from != "thumbnail":
        raise ValueError(f"match_from must be 'file' or 'thumbnail'; got {match_from!r}")
    pack = bundle.thumbnails
    blob = pack.get(hit.id) if pack is not None else None
    if blob is None:
        raise BundleError(f"the bundle stores no thumbnail of image {hit.id}")
    thumbnail = Image.fromarray(decode_thumbnail(blob, name=f"thumbnail {hit.id}"))
    return np.asarray(thumbnail.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def explain_result(
    bundle: Bundle,
    query: str | os.PathLike | np.ndarray,
    result: QueryResult,
    *,
    match_from: Literal["file", "thumbnail"] = "file",
) -> SimilarityExplanation:
    """Explain a search answer: heatmaps of the query and of its best-matching character's image.

    Parameters
    ----------
    bundle : Bundle
    query : path-like, or uint8 ndarray of shape (s, s, 3)
        The query image file (decoded with :func:`lookalike.data.load_image`) or its decoded pixels.
    result : QueryResult
        The bundle's answer for it; ``result.characters[0]`` is explained, with a caption giving its label,
        the cosine similarity and the "no close match" verdict.
    match_from : {"file", "thumbnail"}
        Where the match's pixels come from (see :func:`match_pixels`).

    Returns
    -------
    SimilarityExplanation
        Titled with the match's label, id and split; captioned with the verdict and the score.

    Raises
    ------
    ValueError
        ``result`` has no characters.
    ImageDecodeError, BundleError
        See :func:`match_pixels`; a query file that cannot be read.
    """
    if not result.characters:
        raise ValueError("the result names no character to explain")
    best = result.characters[0]
    # The one dependence on Keras: the query path runs on the bundle's runtime, the explanation on the Keras model.
    embedder = bundle.keras_embedder
    size = embedder.config.image_size
    pixels = (
        load_image(query, size, crop=embedder.config.crop_to_content)
        if isinstance(query, (str, os.PathLike))
        else np.asarray(query, dtype=np.uint8)
    )
    verdict = (
        f"No close match (below this bundle's threshold {result.unknown_threshold:.3f}): the closest is {best.label}"
        if result.unknown
        else f"Best match: {best.label}"
    )
    source = "" if match_from == "file" else f"; its heatmap is computed from its {THUMBNAIL_SIZE} px thumbnail"
    return explain_similarity(
        embedder,
        pixels,
        match_pixels(bundle, best, match_from=match_from),
        match_embedding=bundle.index.vectors[best.row],
        query_title="query",
        match_title=f"{best.label}: image {best.id} ({best.split})",
        caption=f"{verdict}, cosine similarity {best.score:.3f}.\n"
        f"Red: the regions that make up most of the similarity, blue: little or none{source}.",
    )
