"""Why this match: the similarity's per-region decomposition, its heatmaps, and ``search --explain``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import CLASSES
from lookalike.app.cli import main
from lookalike.bundle import explain_result
from lookalike.data import load_image
from lookalike.embedder.explain import location_embeddings
from PIL import Image


@pytest.fixture(scope="module")
def explained(bundle, small_dataset):
    """Each held-out query with its answer and the explanation of its best match (pixels from the file)."""
    _, queries = small_dataset
    paths = [path for name in CLASSES for path in queries[name]]
    results = bundle.query_files(paths)
    return [(path, result, explain_result(bundle, path, result)) for path, result in zip(paths, results)]


def test_location_embeddings_average_to_the_embedding(bundle, small_dataset):
    _, queries = small_dataset
    images = np.stack([load_image(queries[name][0], 224) for name in CLASSES])
    locations = location_embeddings(bundle.keras_embedder, images)
    embeddings, _ = bundle.keras_embedder.head_outputs(bundle.keras_embedder.encode(images))
    assert locations.shape == (len(CLASSES), 7, 7, bundle.keras_embedder.embedding_dim) and locations.dtype == np.float32
    np.testing.assert_allclose(locations.mean(axis=(1, 2)), embeddings, atol=1e-5)
    assert np.ptp(np.linalg.norm(locations, axis=-1)) > 0.1  # the locations differ: not the embedding repeated


def test_location_embeddings_of_a_fused_head_average_to_the_embedding():
    from lookalike.embedder import Embedder, EmbedderConfig

    embedder = Embedder.build(EmbedderConfig(pooled_weight=0.3, pooled_dim=64), ["a", "b", "c"])
    rng = np.random.default_rng(0)
    embedder.fit_pooled(rng.random((10, embedder.feature_dim)).astype(np.float32))
    bn = embedder.head.get_layer("embedding_bn")  # moving statistics away from their initial 0 and 1
    bn.set_weights([rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in bn.get_weights()])
    images = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    embeddings, _ = embedder.head_outputs(embedder.encode(images))
    np.testing.assert_allclose(location_embeddings(embedder, images).mean(axis=(1, 2)), embeddings, atol=1e-5)
    with pytest.raises(ValueError, match=r"images must have shape \(n, 224, 224, 3\); got \(2, 96, 96, 3\)"):
        location_embeddings(embedder, images[:, :96, :96])


def test_shares_sum_to_the_search_score(explained, bundle):
    # The search ran on the bundle's runtime, the explanation on Keras: they agree to fp32 rounding, or to the
    # precision the bundle chose (its agreement was measured when it was saved).
    tolerance = 1e-3 if bundle.precision == "fp32" else 2e-2
    for _, result, explanation in explained:
        best = result.characters[0]
        for shares in (explanation.query_contributions, explanation.match_contributions):
            assert shares.shape == (7, 7) and shares.dtype == np.float32
        assert explanation.query_contributions.sum() == pytest.approx(best.score, abs=tolerance)
        assert explanation.match_contributions.sum() == pytest.approx(best.score, abs=tolerance)  # match from its file
        assert explanation.similarity == pytest.approx(explanation.query_contributions.sum(), abs=1e-5)


def test_heatmaps_are_on_one_scale_in_unit_range_and_not_constant(explained):
    for _, _, explanation in explained:
        heatmaps = explanation.heatmaps()
        for heatmap in heatmaps:
            assert heatmap.shape == (224, 224) and heatmap.dtype == np.float32
            assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
            assert heatmap.std() > 0.05
        assert max(h.max() for h in heatmaps) == pytest.approx(1.0, abs=0.02)  # the hottest share of both is 1
        overlays = explanation.overlays()
        assert all(o.shape == (224, 224, 3) and o.dtype == np.uint8 for o in overlays)
        assert not np.array_equal(overlays[0], explanation.query_image)


def test_occluding_the_hottest_region_lowers_the_similarity_more_than_the_coldest(bundle, explained):
    """Grey out the 64 px square around the query's most and least contributing location; re-embed."""
    drops = {"hottest": [], "coldest": []}
    for _, result, explanation in explained:
        match = bundle.index.vectors[result.characters[0].row]
        shares = explanation.query_contributions
        for name, flat in (("hottest", shares.argmax()), ("coldest", shares.argmin())):
            i, j = np.unravel_index(flat, shares.shape)
            occluded = explanation.query_image.copy()
            centre_y, centre_x = int((i + 0.5) * 32), int((j + 0.5) * 32)
            occluded[max(centre_y - 32, 0) : centre_y + 32, max(centre_x - 32, 0) : centre_x + 32] = 127
            embedding, _ = bundle.keras_embedder.head_outputs(bundle.keras_embedder.encode(occluded[None]))
            drops[name].append(explanation.similarity - float(embedding[0] @ match))
    assert np.mean(drops["hottest"]) > np.mean(drops["coldest"]) + 0.02, drops


def test_match_from_thumbnail_and_bad_source(bundle, explained):
    path, result, from_file = explained[0]
    from_thumbnail = explain_result(bundle, path, result, match_from="thumbnail")
    assert from_thumbnail.similarity == pytest.approx(from_file.similarity, abs=1e-6)  # the indexed embedding
    assert abs(from_thumbnail.match_similarity - from_file.match_similarity) < 0.2
    assert "thumbnail" in from_thumbnail.caption
    with pytest.raises(ValueError, match="match_from must be 'file' or 'thumbnail'; got 'url'"):
        explain_result(bundle, path, result, match_from="url")


def test_search_explain_writes_query_and_match_side_by_side(bundle_path, small_dataset, tmp_path, capsys):
    _, queries = small_dataset
    out = tmp_path / "why.png"
    assert main(["search", str(bundle_path), str(queries["cook"][1]), "--explain", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"explanation written to {out}" in printed
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width == 2 * 256 + 36 and picture.height > 256
        pixels = np.asarray(picture.convert("RGB"))
    assert pixels[:, : picture.width // 2].std() > 10 and pixels[:, picture.width // 2 :].std() > 10


@pytest.mark.parametrize(
    "name, message", [("why.jpg", "must be a .png file; got"), ("missing/why.png", "folder .* does not exist")]
)
def test_search_explain_refuses_a_bad_output_path_before_searching(
    bundle_path, small_dataset, tmp_path, capsys, name, message
):
    _, queries = small_dataset
    with pytest.raises(SystemExit) as exit_info:
        main(["search", str(bundle_path), str(queries["cook"][1]), "--explain", str(tmp_path / name)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--explain" in err and re.search(message, err)
