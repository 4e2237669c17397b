"""Latency of the whole answer, image file -> ``QueryResult``, on an index of real (and derived) embeddings.

Part of ``run.py``: the bundle that embedded the real set answers held-out image files (clean files of the
held-out images, whose views are not indexed) with its index replaced by the benchmark's. Per query it times
``Bundle.embed_files`` (decoding and the bundle's runtime) and ``Bundle.query`` (top-k search, k-NN vote,
nearest characters, centroids) separately, and checks the nearest characters against the exact class ranking
(every class by its best image's similarity, brute force over all vectors).
"""

from __future__ import annotations

import os
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

    def prepare(self, vectors: np.ndarray, images: np.ndarray, spec: IndexSpec, folder: Path) -> dict:
        """A bundle answering with an index of ``spec`` over ``vectors`` (rows of ``images``): built, or read
        from ``folder`` when the curves kept one of the same kind and size."""
        from run import index_file, read_index, records_for

        records = records_for(images, self.real, self.names)
        spec = spec.resolve(len(vectors), vectors.shape[1])
        saved = index_file(folder, len(vectors), spec)
        started = time.perf_counter()
        read = saved.is_file()
        if read:
            index = read_index(saved, vectors, spec, records, self.class_names)
        else:  # and kept for the next item of the same kind and size
            index = EmbeddingIndex.build(vectors, records, self.class_names, spec=spec)
            faiss.write_index(index.faiss_index, str(saved))
        answer = {"bundle": Bundle(self.template.embedder, index, self.template.manifest)}
        answer["result"] = {
            "index": index.spec.to_dict(),
            "vectors": len(index),
            "read_from": str(saved) if read else None,
            "build_or_read_s": time.perf_counter() - started,
            "queries": len(self.paths),
        }
        return answer

    def time(self, answer: dict) -> dict:
        """Answer the held-out files one at a time: the latency of embedding and of the rest of the answer."""
        bundle, result = answer["bundle"], answer["result"]
        bundle.query_files(self.paths[:1])  # warm-up: centroids, runtime
        embed_ms, query_ms, query_cpu_ms, embeddings = [], [], [], []
        result["load_average"] = os.getloadavg()[0]
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
        answer["embeddings"] = np.stack(embeddings)
        total = np.add(embed_ms, query_ms)
        result.update(
            {
                "p50_ms": float(np.percentile(total, 50)),
                "p99_ms": float(np.percentile(total, 99)),
                "embed_p50_ms": float(np.percentile(embed_ms, 50)),
                "query_p50_ms": float(np.percentile(query_ms, 50)),
                "query_p99_ms": float(np.percentile(query_ms, 99)),
                "query_cpu_p50_ms": float(np.percentile(query_cpu_ms, 50)),
            }
        )
        index = bundle.index
        print(
            f"  full answer, {len(index):,} vectors ({index.spec.factory_string()}, efSearch {index.spec.ef_search}, "
            f"load {result['load_average']:.2f}): p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms "
            f"(embedding p50 {result['embed_p50_ms']:.1f} ms, search and ranking p50 {result['query_p50_ms']:.2f} ms, "
            f"{result['query_cpu_p50_ms']:.2f} ms CPU)",
            flush=True,
        )
        return result

    def check(self, answer: dict) -> dict:
        """The nearest characters of the timed answers against the exact class ranking (after the timing)."""
        index, embeddings = answer["bundle"].index, answer["embeddings"]
        _, nearest = index.search_with_classes(embeddings, 10, top=TOP)  # what Bundle.query ranks
        deep = index.search(embeddings, index.class_depth(10))
        exact, exact_scores = exact_classes(index.vectors, index.labels, embeddings, TOP)
        result = {
            "class_depth": index.class_depth(10),
            "filtered_rounds_share": float(np.mean([len(set(r[r >= 0].tolist())) < TOP for r in deep.labels])),
            "characters_vs_exact": agreement(nearest.labels, nearest.scores, exact, exact_scores),
        }
        print(
            f"  {len(index):,} vectors, {index.spec.type}: {result['filtered_rounds_share']:.0%} of queries needed "
            f"filtered rounds; characters vs exact: {result['characters_vs_exact']}",
            flush=True,
        )
        return result
