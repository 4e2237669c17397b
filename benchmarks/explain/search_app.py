"""The Search view's round trip for one user, measured in a real browser (Playwright driving Debian's Chromium).

For each query image (held-out images of the bundle, mirrored so none is indexed), in one browser page:

- ``upload``: from handing the file to the page's file input (the upload starts) until the answer is drawn;
- ``search``: from a click on "Find look-alikes" (the image already uploaded) until the answer is drawn;

where "drawn" is: every full-size progress overlay of the view gone (Gradio's status trackers, the ones an
answer's components show while their event runs) and every image of the page loaded. Work that the view
deliberately does after the answer (the explanation, drawn under a "minimal" tracker) is waited for before
the next query but not counted; its own time is reported as ``explanation``, from the answer to its image.

Either starts ``lookalike serve BUNDLE`` from this checkout on a free port, or measures apps already running,
given as ``--url NAME=URL`` (several: measured in turns, in one run, so that their ratio is fair on a loaded
machine).

    python benchmarks/explain/search_app.py [--bundle ~/.cache/lookalike/demo] [--queries 20]
    python benchmarks/explain/search_app.py --url before=http://127.0.0.1:7872/ --url after=http://127.0.0.1:7871/

Prints the median, p90 and mean per app and measurement; writes ``results-search-app.json`` beside this script.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import numpy as np
from lookalike.app.cli import default_demo_bundle
from lookalike.bundle import Bundle
from queries import mirrored_queries

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server import start_server  # benchmarks/server.py

HERE = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
#: In-page action and watcher: clicks a button, or hands a PNG file to the query's file input as a drop would,
#: at ``window.__t0``, and sets ``window.__done`` to a promise of [answer, settled] milliseconds after it. The
#: answer is drawn when every full-size progress overlay (Gradio's status trackers on the answer's components)
#: is gone and every image of the page has loaded; the view has settled when, after that, no tracker at all
#: (the explanation's "minimal" one included) has shown for 500 ms.
WATCH = """({kind, name, data}) => {
  const bytes = kind === 'upload' ? Uint8Array.from(atob(data), (c) => c.charCodeAt(0)) : null;
  const file = bytes && new File([bytes], name, {type: 'image/png'});
  const button = Array.from(document.querySelectorAll('button')).find((b) => b.innerText.trim() === name);
  const fullBusy = () => document.querySelectorAll('.wrap.full:not(.hide)').length > 0;
  const anyBusy = () => document.querySelectorAll('.wrap.full:not(.hide), .wrap.minimal:not(.hide)').length > 0;
  const loaded = () => Array.from(document.images).every((image) => image.complete);
  let started = false;
  const observer = new MutationObserver(() => { if (fullBusy()) started = true; });
  observer.observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['class']});
  window.__done = new Promise((resolve) => {
    let answer = null, quiet = null;
    const check = () => {
      const now = performance.now();
      if (answer === null && started && !fullBusy() && loaded()) answer = now;
      if (answer !== null) {
        quiet = anyBusy() || !loaded() ? null : (quiet ?? now);
        if (quiet !== null && now - quiet > 500) {
          observer.disconnect();
          resolve([answer - window.__t0, quiet - window.__t0]);
          return;
        }
      }
      requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
  });
  window.__t0 = performance.now();
  if (kind === 'click') {
    button.click();
  } else {
    const input = document.querySelector('input[type=file]');
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    input.dispatchEvent(new Event('change', {bubbles: true}));
  }
}"""


def measure(page, *, click: str | None = None, upload: Path | None = None) -> tuple[float, float]:
    """Milliseconds from clicking button ``click`` or uploading file ``upload`` until the answer is drawn, and
    until the view has settled (see :data:`WATCH`). The action starts inside the page: Playwright's own
    actionability checks are not timed."""
    if upload is not None:
        action = {"kind": "upload", "name": upload.name, "data": base64.b64encode(upload.read_bytes()).decode()}
    else:
        action = {"kind": "click", "name": click, "data": None}
    page.evaluate(WATCH, action)
    answer, settled = page.evaluate("window.__done")
    return float(answer), float(settled)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_demo_bundle(), help="default: the demo bundle")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--url", action="append", default=[], metavar="NAME=URL", help="measure a running app")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    bundle = Bundle.load(args.bundle)
    queries = mirrored_queries(bundle, args.queries + 1)

    server = None
    apps = dict(item.split("=", 1) for item in args.url)
    if not apps:
        server, url = start_server(args.bundle)
        url += "/"
        apps = {"this checkout": url}
    timings = {name: {"upload": [], "search": [], "explanation": []} for name in apps}
    try:
        with sync_playwright() as playwright:
            # Playwright adds --headless, --no-sandbox, --disable-background-networking and the like itself.
            browser = playwright.chromium.launch(executable_path=CHROMIUM)
            pages = {}
            for name, url in apps.items():
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.set_default_timeout(120_000)
                page.goto(url, wait_until="load")
                page.wait_for_selector("text=Find look-alikes")
                pages[name] = page
                # Warm-up query: the first one builds Keras' and the browser's caches.
                measure(page, upload=queries[0])
            for query in queries[1:]:
                for name, page in pages.items():
                    answer, settled = measure(page, upload=query)
                    timings[name]["upload"].append(answer)
                    timings[name]["explanation"].append(settled - answer)
                    timings[name]["search"].append(measure(page, click="Find look-alikes")[0])
                    row = {kind: round(values[-1]) for kind, values in timings[name].items()}
                    print(f"  {query.name} {name}: {row}", flush=True)
            browser.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)

    results = {"bundle": str(args.bundle), "queries": args.queries, "apps": {}}
    print(f"{args.queries} queries (mirrored held-out images of {args.bundle}); milliseconds")
    for name, kinds in timings.items():
        results["apps"][name] = {}
        for kind, values in kinds.items():
            ms = np.asarray(values)
            row = {
                "median_ms": round(float(np.median(ms)), 1),
                "p90_ms": round(float(np.percentile(ms, 90)), 1),
                "mean_ms": round(float(ms.mean()), 1),
            }
            results["apps"][name][kind] = row
            print(
                f"  {name:<16} {kind:<12} median {row['median_ms']:7.1f}   p90 {row['p90_ms']:7.1f}   mean {row['mean_ms']:7.1f}"
            )
    (HERE / "results-search-app.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
