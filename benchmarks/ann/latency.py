"""Latency of the whole answer, image file -> ``QueryResult``, on an index of real (and derived) embeddings.

Part of ``run.py``: the bundle that embedded the real set answers held-out image files (clean files of the
held-out images, whose views are not indexed) with its index replaced by the benchmark's. Per query it times
``Bundle.embed_files`` (decoding and the bundle's runtime) and ``Bundle.query`` (top-k search, k-NN vote,
nearest characters, centroids) separately, and checks the nearest characters against the exact class ranking
(every class by its best image's similarity, brute force over all vectors).
"""

from __future__ import annotations

import time
from pathlib import Path

import faiss
import numpy as np
from lookalike.bundle import Bundle
from lookalike.index import EmbeddingIndex, IndexSpec

QUERIES = 200
TOP = 5


def exact_classes(vectors: np.ndarray, labels: np.ndarray, queries: np.ndarray, top: int):
    """The ``top`` classes of each query by their best image's similarity: int64 (n_queries, top), and those
    similarities."""
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1]])
    classes, scores = [], []
    for chunk in range(0, len(queries), 16):
        similarity = np.asarray(vectors @ queries[chunk : chunk + 16].T).T[:, order]  # (q, n) by class
        best = np.maximum.reduceat(similarity, starts, axis=1)  # (q, classes present)
        ranked = np.argsort(-best, axis=1, kind="stable")[:, :top]
        classes.append(labels[order][starts][ranked])
        scores.append(np.take_along_axis(best, ranked, axis=1))
    return np.concatenate(classes), np.concatenate(scores)


def agreement(found: np.ndarray, found_scores: np.ndarray, exact: np.ndarray, exact_scores: np.ndarray) -> dict:
    """Top-1 and list agreement of class rankings; ``same_scores``: the same best-image similarity at every
    rank (within 1e-5), i.e. identical up to the order of tied classes (duplicate images in two classes)."""
    return {
        "top1": float(np.mean(found[:, 0] == exact[:, 0])),
        "top5_overlap": float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)])),
        "identical_lists": float(np.mean(np.all(found == exact, axis=1))),
        "same_scores": float(np.mean(np.all(np.abs(found_scores - exact_scores) < 1e-5, axis=1))),
    }


class Latency:
    """Times full answers of one bundle over indexes of the benchmark's vectors."""

    def __init__(self, real: dict, bundle_path: Path):
        self.real = real
        self.template = Bundle.load(bundle_path)
        trained = set(self.template.embedder.class_names)
        # the bundle's own classes keep their names; the other art sets' characters become added classes
        self.names = [
            name.split("/", 1)[1] if name.startswith("freedroidrpg/") and name.split("/", 1)[1] in trained else name
            for name in real["class_names"]
        ]
        extra = sorted(set(self.names) - trained)
        self.class_names = [*self.template.embedder.class_names, *extra]
        held = sorted(set(real["query_image"].tolist()))
        rng = np.random.default_rng(2)
        self.paths = [Path(real["meta"]["images"][i]["path"]) for i in rng.choice(held, QUERIES, replace=False)]

    def measure(
        self, vectors: np.ndarray, images: np.ndarray, spec: IndexSpec, lock: Path | None, graphs: Path
    ) -> dict:
        """Build an index of ``spec`` over ``vectors`` (rows of ``images``; an HNSW graph the curves kept in
        ``graphs`` is read instead), answer the held-out files one at a time (the timing holding ``lock``) and
        compare its nearest characters with the exact ranking."""
        from run import records_for, saved_graph, timing

        records = records_for(images, self.real, self.names)
        spec = spec.resolve(len(vectors), vectors.shape[1])
        saved = saved_graph(graphs, len(vectors), spec)
        started = time.perf_counter()
        if spec.type == "hnsw" and saved.is_file():
            graph = faiss.read_index(str(saved))
            faiss.downcast_index(graph.index).hnsw.efSearch = spec.ef_search
            ids = np.arange(len(vectors))
            index = EmbeddingIndex(graph, vectors, ids, records, self.class_names, spec=spec, next_id=len(vectors))
        else:
            index = EmbeddingIndex.build(vectors, records, self.class_names, spec=spec)
        build = time.perf_counter() - started
        bundle = Bundle(self.template.embedder, index, self.template.manifest)
        embed_ms, query_ms, query_cpu_ms, embeddings = [], [], [], []
        with timing(lock) as load:
            bundle.query_files(self.paths[:1])  # warm-up: centroids, runtime
            for path in self.paths:
                started = time.perf_counter()
                embedding, probabilities = bundle.embed_files([path])
                middle, cpu = time.perf_counter(), time.process_time()
                bundle.query(embedding, probabilities)
                done = time.perf_counter()
                query_cpu_ms.append(1000 * (time.process_time() - cpu))
                embed_ms.append(1000 * (middle - started))
                query_ms.append(1000 * (done - middle))
                embeddings.append(embedding[0])
        total = np.add(embed_ms, query_ms)
        embeddings = np.stack(embeddings)
        _, nearest = index.search_with_classes(embeddings, 10, top=TOP)  # what Bundle.query ranks
        deep = index.search(embeddings, index.class_depth(10))
        exact, exact_scores = exact_classes(index.vectors, index.labels, embeddings, TOP)
        result = {
            "index": index.spec.to_dict(),
            "vectors": len(index),
            "build_s": build,
            "graph_read_from": str(saved) if spec.type == "hnsw" and saved.is_file() else None,
            "queries": len(self.paths),
            "load_average": load,
            "p50_ms": float(np.percentile(total, 50)),
            "p99_ms": float(np.percentile(total, 99)),
            "embed_p50_ms": float(np.percentile(embed_ms, 50)),
            "query_p50_ms": float(np.percentile(query_ms, 50)),
            "query_p99_ms": float(np.percentile(query_ms, 99)),
            "query_cpu_p50_ms": float(np.percentile(query_cpu_ms, 50)),
            "class_depth": index.class_depth(10),
            "filtered_rounds_share": float(np.mean([len(set(r[r >= 0].tolist())) < TOP for r in deep.labels])),
            "characters_vs_exact": agreement(nearest.labels, nearest.scores, exact, exact_scores),
        }
        print(
            f"  full answer, {len(index):,} vectors ({index.spec.factory_string()}, efSearch {index.spec.ef_search}, "
            f"load {load:.2f}): p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms (embedding p50 "
            f"{result['embed_p50_ms']:.1f} ms, search and ranking p50 {result['query_p50_ms']:.2f} ms, "
            f"{result['query_cpu_p50_ms']:.2f} ms CPU); {result['filtered_rounds_share']:.0%} of queries needed "
            f"filtered rounds; characters vs exact: {result['characters_vs_exact']}",
            flush=True,
        )
        return result
