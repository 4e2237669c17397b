"""Approximate nearest neighbor search on real embeddings: recall@10 against ms/query, memory, build time, and
the query latency of the whole answer.

Data (``build_embeddings.py`` writes it first): the four art sets' ~7,100 images, each embedded in ``V`` views
(view 0 as it is, the others with query-like augmentations) by a trained bundle. 3 % of the images (seeded) are
held out: their augmented views are the queries, so no query has an embedding of itself, or of another view of
its own image, in the base set; the base set is every view of the other images (about 206,000 for V = 30).

The 1M set keeps the real set and adds derived vectors, each a random point between two real views of the same
image, plus noise, renormalised: ``normalise((1 - t) x_a + t x_b + e)``, ``t ~ U(0, 1)``, ``e ~ N(0, s^2 / d)``
per dimension with ``s = 0.25 |x_a - x_b|``. It is as if each image had been photographed in about five times as
many ways: images, characters and art sets stay where the real embeddings put them and only grow denser, which
is what makes a larger collection harder for an ANN index (more near-ties around each query).

Ground truth is exact inner-product search (FAISS ``IndexFlatIP``); recall@10 is the share of the exact top 10
found in the index's top 10 (``faiss.contrib.evaluation.knn_intersection_measure``). Times are milliseconds per
query, one query per call in one thread, through ``EmbeddingIndex.search`` (IVF-PQ includes its exact re-ranking
from the memory-mapped ``vectors.npy``). Memory per vector is the FAISS index file's size per vector (IVF-PQ
also reads ``vectors.npy``, 4 d bytes per vector, memory-mapped). Then the latency of the full answer (image file
-> probabilities, nearest characters, neighbors, k-NN vote, centroids; ``Bundle.query_files``) for each
``--latency TYPE@N``, with the agreement of the nearest characters with the exact (brute-force) class ranking.

    python benchmarks/ann/build_embeddings.py --bundle BUNDLE    # once; cached in ~/.cache/lookalike/ann
    OMP_WAIT_POLICY=PASSIVE python benchmarks/ann/run.py [--only curves,latency] [--sizes real,1000000] [--lock F]

(``OMP_WAIT_POLICY=PASSIVE``: on a busy machine, FAISS's OpenMP threads spinning while they wait for each other
made an IVF-PQ build of 10,000 vectors take 21.7 s instead of 1.9 s with one thread.)

The run has two phases. First, without the lock: every index is built and kept in ``CACHE/indexes-V-views/``
(with the derived vectors), and its recall@10 measured along its knob. Then, holding ``--lock`` once (a
``flock`` that the machine's other timed jobs take too), every point of the curves and every full answer is
timed; the nearest characters are checked after that. Each time is given twice: wall clock, and the CPU time of
this process (``time.process_time``); the load average when the lock was taken is recorded.

Results go to ``benchmarks/ann/results.json``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import faiss
import numpy as np
from build_embeddings import DEFAULT_OUT, view_path
from faiss.contrib.evaluation import knn_intersection_measure
from lookalike.data import ImageRecord
from lookalike.data.files import write_array, write_atomic
from lookalike.index import EmbeddingIndex, IndexSpec

RESULTS = Path(__file__).with_name("results.json")
#: Full-answer latencies measured by default: TYPE[/efSearch]@N, an index of TYPE (``auto``: what ``IndexSpec()``
#: resolves to) over N vectors, HNSW searching with efSearch (default: the spec's).
LATENCY = (
    "flat@25000,flat@50000,flat@100000,hnsw/128@100000,hnsw/256@100000,hnsw/128@1000000,hnsw/256@1000000,"
    "hnsw/512@1000000"
)
HELD_OUT = 0.03
K = 10
#: IVF-PQ re-ranking depths swept (candidates per result), on the same index.
K_FACTORS = (4, 16)
#: Knob values swept per index type (stopped once recall@10 reaches 0.995).
SWEEPS = {
    "flat": ("ef_search", (None,)),
    "hnsw": ("ef_search", (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)),
    "ivf": ("nprobe", (4, 8, 16, 32, 64, 128)),
    "ivfpq": ("nprobe", (4, 8, 16, 32, 64, 128)),
}


def load_real(cache: Path, seed: int = 0) -> dict:
    """The cached views: base vectors, their image and class per row, and the held-out queries."""
    meta = json.loads((cache / "images.json").read_text())
    views = [np.load(view_path(cache, v)) for v in range(meta["views"]) if view_path(cache, v).is_file()]
    n_images = len(meta["images"])
    labels = [image["label"] for image in meta["images"]]
    names = sorted(set(labels))
    image_class = np.array([names.index(label) for label in labels])
    held = np.zeros(n_images, bool)
    held[np.random.default_rng(seed).choice(n_images, round(HELD_OUT * n_images), replace=False)] = True
    stacked = np.stack(views)  # (V, n_images, d)
    base = stacked[:, ~held].reshape(-1, stacked.shape[-1])
    base_image = np.tile(np.flatnonzero(~held), len(views))
    queries = stacked[1:, held].reshape(-1, stacked.shape[-1])
    query_image = np.tile(np.flatnonzero(held), len(views) - 1)
    return {
        "meta": meta,
        "class_names": names,
        "base": np.ascontiguousarray(base),
        "base_image": base_image,
        "image_class": image_class,
        "queries": np.ascontiguousarray(queries),
        "query_image": query_image,
        "views": len(views),
    }


def derive(base: np.ndarray, base_image: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n - len(base)`` derived vectors (see the module docstring) appended to ``base``, and the image of each."""
    extra = max(n - len(base), 0)
    by_image = np.argsort(base_image, kind="stable")
    starts = np.searchsorted(base_image[by_image], base_image)  # first row (in by_image) of each row's image
    counts = np.bincount(base_image)[base_image]
    a = rng.integers(0, len(base), extra)
    b = by_image[starts[a] + rng.integers(0, counts[a])]
    t = rng.random((extra, 1), dtype=np.float32)
    mixed = (1 - t) * base[a] + t * base[b]
    spread = 0.25 * np.linalg.norm(base[a] - base[b], axis=1, keepdims=True)
    mixed += spread * rng.standard_normal(mixed.shape, dtype=np.float32) / np.sqrt(base.shape[1])
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.concatenate([base, mixed]), np.concatenate([base_image, base_image[a]])


def exact_top(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, k)[1]


def records_for(images: np.ndarray, real: dict, names: list[str]) -> list[ImageRecord]:
    """One record per row (shared by the rows of an image): the image's file and its class in ``names``."""
    meta = real["meta"]["images"]
    shared = [ImageRecord(Path(m["path"]), names[c], "train") for m, c in zip(meta, real["image_class"])]
    return [shared[i] for i in images]


@contextmanager
def timing(lock: Path | None):
    """Hold ``lock`` (``flock``, which the machine's other timed jobs take too) while timing, and yield the
    1-minute load average once it is held; without a lock, just the load average."""
    if lock is None:
        yield os.getloadavg()[0]
        return
    with open(lock, "a") as handle:
        print(f"waiting for {lock} ...", flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield os.getloadavg()[0]
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def vectors_file(folder: Path, real: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` vectors of the real set grown by :func:`derive` (seeded, so the same every run), memory-mapped
    from ``folder/vectors-N.npy`` as a loaded bundle's are (written the first time), and the image of each row."""
    base, images = derive(real["base"], real["base_image"], n, np.random.default_rng(1))
    path = folder / f"vectors-{n}.npy"
    if not path.is_file():
        write_array(path, base[:n])
    return np.load(path, mmap_mode="r"), images[:n]


def index_file(folder: Path, n: int, spec: IndexSpec) -> Path:
    """Where the index of ``spec`` over the first ``n`` vectors is kept between building and timing."""
    name = spec.factory_string().replace(",", "_")
    return (
        folder / f"{n}-{name}-efc{spec.ef_construction}.faiss" if spec.type == "hnsw" else folder / f"{n}-{name}.faiss"
    )


def read_index(path: Path, vectors: np.ndarray, spec: IndexSpec, records, names) -> EmbeddingIndex:
    """An :class:`EmbeddingIndex` over a FAISS index written by the curves (ids 0 .. n - 1), searching with ``spec``."""
    index = faiss.read_index(str(path))
    if spec.type == "hnsw":
        faiss.downcast_index(index.index).hnsw.efSearch = spec.ef_search
    n = len(vectors)
    return EmbeddingIndex(index, vectors, np.arange(n), records, names, spec=spec, next_id=n)


def curves(base: np.ndarray, records, names: list[str], queries: np.ndarray, specs, folder: Path) -> list[dict]:
    """Build each spec's index over ``base`` (a memory-mapped file, as a loaded bundle's), keep it in ``folder``
    and measure recall@10 along its knob; :func:`time_curves` times the same points later."""
    started = time.perf_counter()
    truth = exact_top(base, queries, K)
    print(f"  exact top-{K} of {len(queries)} queries (batched): {time.perf_counter() - started:.1f} s", flush=True)
    out = []
    for spec in specs:
        started = time.perf_counter()
        index = EmbeddingIndex.build(base, records, names, spec=spec)
        build = time.perf_counter() - started
        path = index_file(folder, len(base), index.spec)
        faiss.write_index(index.faiss_index, str(path))
        size = path.stat().st_size
        print(f"  {index.spec.factory_string()}: built in {build:.0f} s, {size / len(base):.0f} B/vector", flush=True)
        knob, values = SWEEPS[index.spec.type]
        for k_factor in K_FACTORS if spec.type == "ivfpq" else (spec.k_factor,):
            index.spec = replace(index.spec, k_factor=k_factor)
            rows = []
            for value in values:
                recall = knn_intersection_measure(index.search(queries, K, **knobs(knob, value)).ids, truth)
                rows.append({knob: value, "recall_at_10": recall})
                print(f"    k_factor {k_factor}, {knob}={value}: recall@10 {recall:.4f}", flush=True)
                if recall >= 0.995:
                    break
            out.append(
                {
                    "spec": index.spec.to_dict(),
                    "factory": index.spec.factory_string(),
                    "build_s": build,
                    "bytes_per_vector": size / len(base),
                    "file": str(path),
                    "knob": knob,
                    "sweep": rows,
                }
            )
        del index
    return out


def knobs(knob: str, value) -> dict:
    """Search options of one point of a sweep (none for exact search)."""
    return {} if value is None else {knob: value}


def time_curves(rows: list[dict], vectors: np.ndarray, queries: np.ndarray) -> None:
    """Milliseconds per query (wall clock and CPU), one query per call, at every point :func:`curves` measured."""
    records = [ImageRecord(Path("/unused"), "x", "train")] * len(vectors)
    for row in rows:
        spec = IndexSpec.from_dict(row["spec"])
        index = read_index(Path(row["file"]), vectors, spec, records, ["x"])
        for point in row["sweep"]:
            options = knobs(row["knob"], point[row["knob"]])
            index.search(queries[:1], K, **options)  # warm-up
            started, cpu = time.perf_counter(), time.process_time()
            for q in queries:
                index.search(q[None], K, **options)
            point["ms_per_query"] = 1000 * (time.perf_counter() - started) / len(queries)
            point["cpu_ms_per_query"] = 1000 * (time.process_time() - cpu) / len(queries)
            print(
                f"  {row['factory']} (k_factor {spec.k_factor}) {options}: recall@10 {point['recall_at_10']:.4f}, "
                f"{point['ms_per_query']:.3f} ms/query ({point['cpu_ms_per_query']:.3f} ms CPU)",
                flush=True,
            )
        del index


def specs_for(n: int, hnsw: str) -> list[IndexSpec]:
    """Flat, the HNSW graphs of ``hnsw`` (``M/efConstruction,...``), IVF-Flat and IVF-PQ with about 4 sqrt(n)
    cells."""
    nlist = int(2 ** round(np.log2(4 * np.sqrt(n))))
    graphs = [tuple(map(int, item.split("/"))) for item in hnsw.split(",") if item]
    return [
        IndexSpec(type="flat"),
        *(IndexSpec(type="hnsw", hnsw_m=m, ef_construction=ef) for m, ef in graphs),
        IndexSpec(type="ivf", nlist=nlist),
        IndexSpec(type="ivfpq", nlist=nlist),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_OUT, help="where build_embeddings.py wrote the views")
    parser.add_argument("--only", default="curves,latency", help="comma-separated parts to run")
    parser.add_argument(
        "--sizes", default="real,1000000", help="curves' index sizes: 'real' (all real base vectors) or n"
    )
    parser.add_argument(
        "--hnsw", default="16/80,32/80", help="HNSW graphs of the real set's curves, M/efConstruction,..."
    )
    parser.add_argument("--hnsw-derived", default="32/80", help="HNSW graphs of the larger, derived sets' curves")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--bundle", type=Path, help="bundle for the latency part (default: the one that embedded)")
    parser.add_argument(
        "--latency",
        default=LATENCY,
        help="TYPE[/efSearch]@N,...: full-answer latency with an index of TYPE (auto: IndexSpec()'s choice) over N "
        "vectors",
    )
    parser.add_argument("--lock", type=Path, help="file to flock while timing (shared with other timed jobs)")
    args = parser.parse_args()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["machine"] = {"cpus": os.cpu_count()}
    results.pop("note", None)  # of an earlier run
    real = load_real(args.cache)
    rng = np.random.default_rng(0)
    queries = real["queries"][rng.choice(len(real["queries"]), min(args.queries, len(real["queries"])), replace=False)]
    print(
        f"real set: {len(real['base']):,} base vectors ({real['views']} views of "
        f"{len(set(real['base_image'].tolist())):,} images, {len(real['class_names'])} characters), "
        f"{len(real['queries']):,} held-out query views ({len(queries)} used)",
        flush=True,
    )
    results["data"] = {
        "base_real": len(real["base"]),
        "views": real["views"],
        "images": len(real["meta"]["images"]),
        "characters": len(real["class_names"]),
        "held_out_query_views": len(real["queries"]),
        "queries": len(queries),
        "bundle": real["meta"]["bundle"],
    }
    parts = args.only.split(",")
    folder = args.cache / f"indexes-{real['views']}-views"  # built indexes and derived vectors, kept for timing
    folder.mkdir(exist_ok=True)
    sizes = [len(real["base"]) if s == "real" else int(s) for s in args.sizes.split(",")]
    if "curves" in parts:  # build and recall, without the lock
        results["curves"] = {}
        for n in sizes:
            vectors, images = vectors_file(folder, real, n)
            print(f"{n:,} vectors:", flush=True)
            records = records_for(images, real, real["class_names"])
            specs = specs_for(n, args.hnsw if n <= len(real["base"]) else args.hnsw_derived)
            results["curves"][str(n)] = curves(vectors, records, real["class_names"], queries, specs, folder)
            write_atomic(RESULTS, json.dumps(results, indent=2))
    answers = []
    if "latency" in parts:  # indexes built (or read) before the lock is taken
        from latency import Latency

        latency = Latency(real, args.bundle or Path(real["meta"]["bundle"]))
        results.setdefault("latency", {})
        for item in args.latency.split(","):
            kind, n = item.split("@")
            kind, _, ef_search = kind.partition("/")
            spec = IndexSpec(type=kind, **({"ef_search": int(ef_search)} if ef_search else {}))
            vectors, images = vectors_file(folder, real, int(n))
            answers.append((item, latency.prepare(vectors, images, spec, folder)))
    with timing(args.lock) as load:  # every timed part, in one hold of the lock
        results["load_average_timed"] = load
        for n in sizes if "curves" in parts else ():
            print(f"timing {n:,} vectors (load average {load:.2f}):", flush=True)
            time_curves(results["curves"][str(n)], vectors_file(folder, real, n)[0], queries)
        for item, answer in answers:
            results["latency"][item] = latency.time(answer)
    for item, answer in answers:
        results["latency"][item].update(latency.check(answer))
    write_atomic(RESULTS, json.dumps(results, indent=2))
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
