"""Speed and scale: embedding throughput, query latency, approximate search at 1M vectors, peak memory.

On a trained bundle (default: the demo bundle), in one run:

1. throughput, files -> vectors at 224 px: lookalike's streaming embedding (parallel decoding + LiteRT,
   written to part files) against Keras ``model.predict`` of the same classifier on the same files, decoded
   by the same parallel decoder; on every image of the shared datasets (3,676 PNG sprites), then on large
   JPEG photos made from some of them by upscaling (decoded with Pillow's draft mode);
2. query latency, image file -> full answer (probabilities, characters, neighbors, k-NN vote, centroids),
   p50 and p99 over 200 queries, on the bundle's index grown to 10k and 100k vectors (the real embeddings
   plus perturbed copies, as many images of the same characters would give);
3. approximate search on 1M synthetic 256-d vectors (2,000 "characters" x 10 "poses" x noise, see
   ``_synthetic``): build time, then the smallest HNSW ``ef_search`` and IVF ``nprobe`` reaching
   recall@10 >= 0.95 against exact search, with milliseconds per query (one query at a time);
4. peak memory (max RSS) of ``lookalike embed`` over 5,000 and 20,000 images;
5. ``search``: the whole process ``lookalike search BUNDLE IMAGE --json`` for one image, wall time and peak RSS,
   with the bundle's chosen runtime (no TensorFlow) against the Keras path (``LOOKALIKE_RUNTIME=keras``), the
   median of 3 runs of each, alternating;
6. ``runtimes``: throughput as in 1 on the shared images with each runtime (fp32, bf16, int8 when present) and
   Keras ``predict``, and the whole process ``lookalike add`` of all wesnoth_units images into a copy of the
   bundle against a plain Keras script (load ``model.keras``, decode with the same parallel decoder,
   ``model.predict``, save the embeddings).

    python benchmarks/speed/run.py [--bundle PATH] [--only throughput,latency,ann,memory,search,runtimes]

Results go to benchmarks/speed/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.app.cli import default_demo_bundle
from lookalike.data import ImageRecord, find_images, iter_image_batches
from lookalike.embedder.stream import EmbeddingStore, embed_to_store
from lookalike.bundle import Bundle
from lookalike.index import EmbeddingIndex, IndexSpec

#: The shared datasets: ``../shared/datasets`` beside the checkout, or ``$LOOKALIKE_SHARED_DATASETS``.
SHARED = Path(
    os.environ.get("LOOKALIKE_SHARED_DATASETS", Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
)
RESULTS = Path(__file__).with_name("results.json")
LOOKALIKE = [sys.executable, "-m", "lookalike.app.cli"]
#: The plain Keras script ``lookalike add`` is compared with: load the model, decode, predict, save.
KERAS_SCRIPT = """
import sys, numpy as np, keras
from lookalike.data import find_images, iter_image_batches
model = keras.models.load_model(sys.argv[1] + "/model.keras", compile=False, safe_mode=True)
outputs = [model.predict(batch.images.astype(np.float32), batch_size=64, verbose=0)
           for batch in iter_image_batches(find_images(sys.argv[3:]), size=224, batch_size=64)]
np.save(sys.argv[2], np.concatenate(outputs))
"""


def _records(paths):
    return [ImageRecord(p, p.parent.name, "added") for p in paths]


def _keras_throughput(bundle: Bundle, paths) -> float:
    """Images per second, files -> vectors, with Keras ``model.predict`` on batches from the same decoder."""
    classifier, size = bundle.keras_embedder.classifier, bundle.embedder.config.image_size
    classifier.predict(np.zeros((8, size, size, 3), np.float32), verbose=0)  # build the predict function first
    started = time.perf_counter()
    for batch in iter_image_batches(paths, size=size, batch_size=64):
        classifier.predict(batch.images.astype(np.float32), batch_size=64, verbose=0)
    return len(paths) / (time.perf_counter() - started)


def _lookalike_throughput(bundle: Bundle, paths, embedder=None) -> float:
    """Images per second of the streaming embedding job (what ``lookalike embed`` runs), part files included."""
    embedder = embedder or bundle.embedder
    with tempfile.TemporaryDirectory() as folder:
        embed_to_store(embedder, _records(paths[:256]), EmbeddingStore(folder))  # warm-up on a throwaway store
    with tempfile.TemporaryDirectory() as folder:
        summary = embed_to_store(embedder, _records(paths), EmbeddingStore(folder))
    return summary.images_per_second


def _large_jpegs(paths, folder: Path, side: int) -> list[Path]:
    out = []
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            photo = image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)
        target = folder / f"{i:04d}.jpg"
        photo.save(target, quality=90)
        out.append(target)
    return out


def throughput(bundle: Bundle) -> dict:
    paths = find_images([SHARED / "wesnoth_units", SHARED / "freedroidrpg"])
    fast, keras = _lookalike_throughput(bundle, paths), _keras_throughput(bundle, paths)
    print(
        f"{len(paths)} shared images: lookalike {fast:.0f} img/s, Keras model.predict {keras:.0f} img/s: {fast / keras:.2f}x"
    )
    results = {"images": len(paths), "lookalike": fast, "keras": keras, "ratio": fast / keras}
    with tempfile.TemporaryDirectory() as folder:
        jpegs = _large_jpegs(paths[::12][:300], Path(folder), side=3000)
        megabytes = sum(p.stat().st_size for p in jpegs) / len(jpegs) / 1e6
        fast, keras = _lookalike_throughput(bundle, jpegs), _keras_throughput(bundle, jpegs)
    print(
        f"{len(jpegs)} JPEG photos of 3000x3000 ({megabytes:.1f} MB each): lookalike {fast:.0f} img/s, "
        f"Keras {keras:.0f} img/s: {fast / keras:.2f}x"
    )
    results["large_jpeg"] = {
        "images": len(jpegs),
        "side": 3000,
        "lookalike": fast,
        "keras": keras,
        "ratio": fast / keras,
    }
    return results


def latency(bundle: Bundle) -> dict:
    rng = np.random.default_rng(0)
    base_vectors, base_records = bundle.index.vectors.copy(), list(bundle.index.records)
    queries = [Path(p) for p in rng.choice(find_images([SHARED / "wesnoth_units"]), 200, replace=False)]
    results = {}
    for size in (10_000, 100_000):
        extra = size - len(bundle.index)
        if extra > 0:
            rows = rng.integers(0, len(base_vectors), extra)
            noisy = base_vectors[rows] + 0.02 * rng.standard_normal((extra, base_vectors.shape[1])).astype(np.float32)
            noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
            bundle.index.add(noisy, [base_records[r] for r in rows])
        bundle.query_files([queries[0]])  # warm-up: centroids, runtime
        times = []
        for query in queries:
            started = time.perf_counter()
            bundle.query_files([query])
            times.append(1000 * (time.perf_counter() - started))
        p50, p99 = np.percentile(times, [50, 99])
        results[str(size)] = {"index": bundle.index.spec.type, "p50_ms": p50, "p99_ms": p99}
        print(
            f"query latency, {len(bundle.index):,} vectors ({bundle.index.spec.type}): p50 {p50:.1f} ms, p99 {p99:.1f} ms"
        )
    return results


def _synthetic(n: int, d: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """``n`` index vectors and 1,000 queries: 2,000 "characters" x 10 "poses" x noise, L2-normalised.

    Per dimension: character centre ~ N(0, 1/d), pose offset ~ N(0, 0.36/d), noise ~ N(0, 0.09/d) (norms about
    1, 0.6 and 0.3), so that, as in real embeddings, images cluster by character and pose.
    """
    characters = rng.standard_normal((2_000, d), dtype=np.float32) / np.sqrt(d)
    poses = np.repeat(characters, 10, axis=0) + 0.6 * rng.standard_normal((20_000, d), dtype=np.float32) / np.sqrt(d)

    def draw(m: int) -> np.ndarray:
        x = poses[rng.integers(0, len(poses), m)] + 0.3 * rng.standard_normal((m, d), dtype=np.float32) / np.sqrt(d)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return np.concatenate([draw(100_000) for _ in range(n // 100_000)]), draw(1_000)


def ann(d: int = 256, n: int = 1_000_000, n_queries: int = 1000) -> dict:
    import faiss

    vectors, queries = _synthetic(n, d, np.random.default_rng(0))
    queries = queries[:n_queries]
    records = [ImageRecord(Path("synthetic"), "synthetic", "train")] * n
    exact = faiss.IndexFlatIP(d)
    exact.add(vectors)
    started = time.perf_counter()
    truth = exact.search(queries, 10)[1]
    exact_ms = 1000 * (time.perf_counter() - started) / n_queries
    print(f"exact search of {n:,} vectors: {exact_ms:.2f} ms per query (batched)")
    results = {"vectors": n, "dim": d, "exact_batched_ms": exact_ms}
    del exact
    sweeps = {
        "hnsw": ("ef_search", (16, 32, 48, 64, 96, 128, 192, 256, 384)),
        "ivf": ("nprobe", (4, 8, 16, 32, 64, 128)),
    }
    for kind, (knob, values) in sweeps.items():
        started = time.perf_counter()
        index = EmbeddingIndex.build(vectors, records, ["synthetic"], spec=IndexSpec(type=kind))
        build = time.perf_counter() - started
        rows = []
        for value in values:
            started = time.perf_counter()
            found = np.concatenate([index.search(q[None], 10, **{knob: value}).ids for q in queries])
            ms = 1000 * (time.perf_counter() - started) / n_queries
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]))
            rows.append({knob: value, "recall_at_10": recall, "ms_per_query": ms})
            print(f"  {kind} {knob}={value}: recall@10 {recall:.3f}, {ms:.3f} ms per query")
            if recall >= 0.99:
                break
        chosen = next((r for r in rows if r["recall_at_10"] >= 0.95), None)
        results[kind] = {"spec": index.spec.to_dict(), "build_s": build, "sweep": rows, "at_recall_0.95": chosen}
        print(f"{kind}: built in {build:.0f} s; at recall@10 >= 0.95: {chosen}")
        del index
    return results


def _process(command: list[str], env: dict | None = None) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of ``command`` run to completion in a fresh process (output discarded)."""
    script = (
        "import resource, subprocess, sys, time; started = time.perf_counter(); subprocess.run(sys.argv[1:], "
        "check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); seconds = time.perf_counter() - started; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, seconds)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *command], capture_output=True, text=True, check=True, env=env or os.environ
    )
    peak, seconds = done.stdout.split()
    return int(peak) / 1024, float(seconds)


def _embed_peak_rss(bundle_path: Path, folder: Path) -> tuple[float, float]:
    """Max RSS (MB) and wall seconds of ``lookalike embed`` over ``folder``, in a fresh process."""
    with tempfile.TemporaryDirectory() as out:
        return _process([*LOOKALIKE, "embed", str(bundle_path), str(folder), "--out", out])


def memory(bundle_path: Path) -> dict:
    sources = find_images([SHARED / "wesnoth_units", SHARED / "freedroidrpg"])
    results = {}
    with tempfile.TemporaryDirectory() as root:
        for count in (5_000, 20_000):
            folder = Path(root) / str(count)
            for i in range(count):  # distinct paths (symbolic links), repeating the shared images
                link = folder / f"copy{i // len(sources)}" / f"{i:06d}{sources[i % len(sources)].suffix}"
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(sources[i % len(sources)])
            peak, seconds = _embed_peak_rss(bundle_path, folder)
            results[str(count)] = {"peak_rss_mb": peak, "seconds": seconds}
            print(f"lookalike embed of {count:,} images: peak RSS {peak:.0f} MB, {seconds:.0f} s (process included)")
    return results


def _runtime_env(runtime: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LOOKALIKE_RUNTIME"}
    return env | ({"LOOKALIKE_RUNTIME": runtime} if runtime else {})


def search_process(bundle_path: Path, repeats: int = 3) -> dict:
    """Whole-process ``lookalike search --json`` of one image: the bundle's runtime against Keras, alternating."""
    query = str(find_images([SHARED / "wesnoth_units"])[0])
    command = [*LOOKALIKE, "search", str(bundle_path), query, "--json"]
    runs = {"runtime": [], "keras": []}
    for _ in range(repeats):
        runs["runtime"].append(_process(command, _runtime_env(None)))
        runs["keras"].append(_process(command, _runtime_env("keras")))
    results = {
        name: {"peak_rss_mb": float(np.median([r[0] for r in rs])), "seconds": float(np.median([r[1] for r in rs]))}
        for name, rs in runs.items()
    }
    results["precision"] = Bundle.load(bundle_path).precision
    results["speedup"] = results["keras"]["seconds"] / results["runtime"]["seconds"]
    print(
        f"lookalike search, whole process, one image (median of {repeats}): {results['precision']} runtime "
        f"{results['runtime']['seconds']:.2f} s, {results['runtime']['peak_rss_mb']:.0f} MB; Keras "
        f"{results['keras']['seconds']:.2f} s, {results['keras']['peak_rss_mb']:.0f} MB: {results['speedup']:.1f}x"
    )
    return results


def runtimes(bundle_path: Path, limit: int | None = None) -> dict:
    """Throughput of each runtime and of Keras on the shared images (every ``limit``-th share of them when given),
    and whole-process ``add`` of wesnoth_units (the same share) against the plain Keras script."""
    from lookalike.embedder import load_embedder
    from lookalike.embedder.runtime import PRECISIONS

    bundle = Bundle.load(bundle_path)
    paths = find_images([SHARED / "wesnoth_units", SHARED / "freedroidrpg"])
    step = max(1, len(paths) // limit) if limit else 1
    paths = paths[::step]
    results = {"images": len(paths), "chosen": bundle.precision, "throughput": {}}
    for precision in PRECISIONS:
        embedder = load_embedder(bundle_path, precision=precision)
        if getattr(embedder, "precision", None) != precision:
            print(f"{precision}: not available")
            continue
        results["throughput"][precision] = _lookalike_throughput(bundle, paths, embedder)
    results["throughput"]["keras"] = _keras_throughput(bundle, paths)
    keras = results["throughput"]["keras"]
    for name, speed in results["throughput"].items():
        print(f"{len(paths)} shared images, {name}: {speed:.0f} img/s ({speed / keras:.2f}x Keras predict)")
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "images"  # symbolic links to the share of wesnoth_units (new to the bundle)
        for i, source in enumerate(find_images([SHARED / "wesnoth_units"])[::step]):
            (folder / source.parent.name).mkdir(parents=True, exist_ok=True)
            (folder / source.parent.name / f"{i:05d}{source.suffix}").symlink_to(source)
        count = len(find_images([folder]))
        copy = Path(scratch) / "copy.bundle"
        bundle.save(copy)
        add_mb, add_s = _process([*LOOKALIKE, "add", str(copy), str(folder)], _runtime_env(None))
        keras_mb, keras_s = _process(
            [sys.executable, "-c", KERAS_SCRIPT, str(bundle_path), str(Path(scratch) / "keras.npy"), str(folder)]
        )
    results["add"] = {
        "images": count,
        "lookalike_add": {"seconds": add_s, "peak_rss_mb": add_mb},
        "plain_keras_script": {"seconds": keras_s, "peak_rss_mb": keras_mb},
        "ratio": keras_s / add_s,
    }
    print(
        f"whole process, {count} wesnoth_units images: lookalike add {add_s:.1f} s ({add_mb:.0f} MB), plain Keras "
        f"script {keras_s:.1f} s ({keras_mb:.0f} MB): {keras_s / add_s:.2f}x"
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_demo_bundle())
    parser.add_argument(
        "--only", default="throughput,latency,ann,memory,search,runtimes", help="comma-separated parts to run"
    )
    parser.add_argument("--limit", type=int, help="runtimes: about this many of the shared images (default: all)")
    args = parser.parse_args()
    parts = args.only.split(",")
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results["machine"] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    if "throughput" in parts:
        results["throughput"] = throughput(Bundle.load(args.bundle))
    if "latency" in parts:
        results["latency"] = latency(Bundle.load(args.bundle))
    if "ann" in parts:
        results["ann"] = ann()
    if "memory" in parts:
        results["memory"] = memory(args.bundle)
    if "search" in parts:
        results["search"] = search_process(args.bundle)
    if "runtimes" in parts:
        results["runtimes"] = runtimes(args.bundle, args.limit)
    results["peak_rss_mb_of_this_run"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    RESULTS.write_text(json.dumps(results, indent=2))
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
