"""Cost of "why this match": the explanation step alone, and ``lookalike search --explain`` as a whole command.

Queries are the bundle's held-out (val/test) images, mirrored left-right so that none is an indexed image.

1. In one process (bundle loaded, one warm-up explanation first): per query, the search
   (``Bundle.query_files``), the explanation (:func:`lookalike.bundle.explain_result`: the Keras backbone on the
   query and its best match, the per-location decomposition) and drawing it (``to_png``).
2. The whole command, a fresh process each time: ``lookalike search BUNDLE IMAGE`` and the same with
   ``--explain OUT.png``, alternated, on the first ``--commands`` queries.

    python benchmarks/explain/run.py [--bundle ~/.cache/lookalike/demo] [--queries 20] [--commands 3]

Prints milliseconds (median and p90) and writes ``results.json`` beside this script.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from lookalike.app.cli import default_demo_bundle
from lookalike.bundle import Bundle, explain_result
from queries import mirrored_queries

HERE = Path(__file__).parent


def summary(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {"n": len(ms), "median_ms": round(float(np.median(ms)), 1), "p90_ms": round(float(np.percentile(ms, 90)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_demo_bundle(), help="default: the demo bundle")
    parser.add_argument("--queries", type=int, default=20, help="queries timed in one process (default 20)")
    parser.add_argument("--commands", type=int, default=3, help="whole commands timed, each kind (default 3)")
    args = parser.parse_args()

    bundle = Bundle.load(args.bundle)
    queries = mirrored_queries(bundle, args.queries + 1)

    explain_result(bundle, queries[0], bundle.query_files([queries[0]])[0]).to_png()  # warm-up: builds Keras' graph
    timings = {"search": [], "explain": [], "draw": []}
    for query in queries[1:]:
        started = time.perf_counter()
        result = bundle.query_files([query])[0]
        searched = time.perf_counter()
        explanation = explain_result(bundle, query, result)
        explained = time.perf_counter()
        explanation.to_png()
        drawn = time.perf_counter()
        timings["search"].append(searched - started)
        timings["explain"].append(explained - searched)
        timings["draw"].append(drawn - explained)
    in_process = {name: summary(values) for name, values in timings.items()}
    in_process["explain+draw"] = summary([e + d for e, d in zip(timings["explain"], timings["draw"])])

    command = [sys.executable, "-m", "lookalike.app.cli", "search", str(args.bundle)]
    whole = {"search": [], "search --explain": []}
    for n, query in enumerate(queries[1 : args.commands + 1]):
        for name, extra in (("search", []), ("search --explain", ["--explain", str(query.with_name(f"why-{n}.png"))])):
            started = time.perf_counter()
            subprocess.run([*command, str(query), *extra], check=True, capture_output=True)
            whole[name].append(time.perf_counter() - started)
    commands = {name: summary(values) for name, values in whole.items()}

    results = {"bundle": str(args.bundle), "images": len(bundle.index), "in_process": in_process, "commands": commands}
    print(f"{args.queries} queries (mirrored held-out images) on {args.bundle}, {len(bundle.index)} indexed images")
    for name, row in {**in_process, **{f"command: {k}": v for k, v in commands.items()}}.items():
        print(f"  {name:<28} median {row['median_ms']:8.1f} ms   p90 {row['p90_ms']:8.1f} ms   (n={row['n']})")
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
