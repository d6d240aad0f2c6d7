"""Console benchmark: how fast the web console's pages answer for a cube of 10k memories (paged).

    python -m bench.console [--memories 10000] [--runs 30] [--chromium /usr/bin/chromium]

Starts the HTTP app over a fresh home, imports ``--memories`` synthetic memories into one cube (with
ready-made unit vectors of the embedder's dimension, so no model runs while loading) plus a chain of
FOLLOWS-like neighbours through normal adds, then times each console fragment (``/v1/console/...``,
the server's part of a page) ``--runs`` times, and, when Chromium is present, a full page load in the
browser (navigation, shell, script, fragment, table visible). The first request of the cube list is
timed apart: it starts folding the whole memories topic into the console's digest (once per server
process) and answers within ~0.25 s with the counts marked as pending; ``digest_cold_ms`` is the time
until the counts are there.
The last line is one JSON object of headline figures (``page_p95_ms``: worst p95 over the paged
pages; ``browser_load_p95_ms``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

logger = logging.getLogger(__name__)

CUBE = "bench_cube"
WORDS = ("hotel trip flight budget museum dinner meeting report passport train coffee garden ticket "
         "market river tower island temple noodle tea bridge harbour station archive").split()


def _vector(rng: random.Random, dim: int) -> list[float]:
    v = [rng.gauss(0.0, 1.0) for _ in range(dim)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _time(client: httpx.Client, url: str, runs: int) -> tuple[float, float, int]:
    samples = []
    size = 0
    for _ in range(runs):
        started = time.perf_counter()
        resp = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        resp.raise_for_status()
        size = len(resp.content)
    return statistics.median(samples), _percentile(samples, 0.95), size


def main(argv: list[str] | None = None) -> None:
    """Load the cube, time the pages, print the table and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--chromium", default=os.environ.get("MEMOS_TEST_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="memos-bench-console-"))
    os.environ["MEMOS_HOME"] = str(home)
    from memos.server.app import BackgroundServer, create_app
    from streams.settings import load_settings

    server = BackgroundServer(create_app(load_settings("default"))).start()
    try:
        service = server.app.state.service
        server.call(service.create_user("bench"))
        server.call(service.create_cube(CUBE, owner_id="bench"))
        key = server.call(service.issue_key("bench"))
        embedder = service.rt.embedder
        dim = len(server.call(embedder.embed(["probe"], kind="passage")).vectors[0])
        rng = random.Random(7)
        started = time.perf_counter()
        batch = 2000
        for first in range(0, args.memories, batch):
            drafts = [{"memory_id": str(uuid.UUID(int=rng.getrandbits(128))),
                       "memory": " ".join(rng.choice(WORDS) for _ in range(12)) + f" (#{n})",
                       "memory_type": rng.choice(["LongTermMemory", "UserMemory", "PreferenceMemory"]),
                       "embedding": _vector(rng, dim), "embedding_model": embedder.model_id,
                       "extractor": "import"}
                      for n in range(first, min(args.memories, first + batch))]
            server.call(service.import_memories("bench", CUBE, drafts), timeout_s=1800)
        load_s = time.perf_counter() - started
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=headers, timeout=120) as client:
            started = time.perf_counter()
            client.get("/v1/console/cubes").raise_for_status()
            first_ms = (time.perf_counter() - started) * 1000
            while "counting…" in client.get("/v1/console/cubes").text:  # the page's own refresh, as a loop
                time.sleep(0.05)
            cold_ms = (time.perf_counter() - started) * 1000
            some = client.get(f"/v1/console/cubes/{CUBE}/memories?page=3").text
            memory_id = some.split('data-id="', 1)[1].split('"', 1)[0]
            last_page = max(1, args.memories // 50)
            pages = {
                "cubes": "/v1/console/cubes",
                "memories page 1": f"/v1/console/cubes/{CUBE}/memories",
                f"memories page {last_page}": f"/v1/console/cubes/{CUBE}/memories?page={last_page}",
                "memories type filter": f"/v1/console/cubes/{CUBE}/memories?type=UserMemory&page=20",
                "memory lineage": f"/v1/console/cubes/{CUBE}/memories/{memory_id}",
                "graph (300 nodes)": f"/v1/console/cubes/{CUBE}/graph",
                "tasks": "/v1/console/tasks",
                "usage": "/v1/console/usage",
                "feed page": "/v1/console/feed",
                "memories text filter (scan)": f"/v1/console/cubes/{CUBE}/memories?q=harbour+station",
                "search playground": f"/v1/console/search?q=harbour+station+tea&cube={CUBE}",
            }
            results = {name: _time(client, url, args.runs) for name, url in pages.items()}
        browser = _browser_load(server.url, key, args.chromium, args.runs)
    finally:
        server.stop()
    paged = [n for n in results if n not in ("memories text filter (scan)", "search playground")]
    print(f"console pages over a cube of {args.memories} memories (loaded in {load_s:.1f} s), "
          f"{args.runs} runs each")
    print(f"{'page':32} {'p50 ms':>8} {'p95 ms':>8} {'bytes':>8}")
    for name, (p50, p95, size) in results.items():
        print(f"{name:32} {p50:8.1f} {p95:8.1f} {size:8d}")
    print(f"{'cube list, first answer':32} {first_ms:8.1f}")
    print(f"{'cube list, counts ready (digest)':32} {cold_ms:8.1f}")
    if browser:
        print(f"{'browser: page load (own clock)':32} {browser[0]:8.1f} {browser[1]:8.1f}")
        print(f"{'browser: page load (playwright)':32} {browser[2]:8.1f} {browser[3]:8.1f}")
    print(json.dumps({
        "memories": args.memories,
        "page_p95_ms": round(max(results[n][1] for n in paged), 1),
        "memories_page_p95_ms": round(results["memories page 1"][1], 1),
        "lineage_p95_ms": round(results["memory lineage"][1], 1),
        "scan_filter_p95_ms": round(results["memories text filter (scan)"][1], 1),
        "search_p95_ms": round(results["search playground"][1], 1),
        "first_cubes_ms": round(first_ms, 1),
        "digest_cold_ms": round(cold_ms, 1),
        "browser_load_p95_ms": round(browser[1], 1) if browser else None,
        "browser_load_playwright_p95_ms": round(browser[3], 1) if browser else None,
    }))


def _browser_load(url: str, key: str, chromium: str, runs: int) -> tuple[float, float, float, float] | None:
    """In headless Chromium, p50/p95 ms from navigation start to the page's fragment in place (the
    browser's own clock: the console's ``memos:view`` mark), then p50/p95 as Playwright sees it
    (its protocol round trips included)."""
    if not Path(chromium).is_file():
        logger.warning("no chromium at %s: browser timing skipped", chromium)
        return None
    from playwright.sync_api import expect, sync_playwright

    samples: list[float] = []
    marks: list[float] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(url + "/console")
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Open").click()
        expect(page.locator("#cubes")).to_be_visible()
        for _ in range(runs):
            started = time.perf_counter()
            page.goto(f"{url}/console/cubes/{CUBE}/memories?page=7")
            expect(page.locator("#memories tbody tr").first).to_be_visible()
            samples.append((time.perf_counter() - started) * 1000)
            page.wait_for_function("performance.getEntriesByName('memos:view').length > 0")
            marks.append(page.evaluate("performance.getEntriesByName('memos:view')[0].startTime"))
        browser.close()
    return (statistics.median(marks), _percentile(marks, 0.95), statistics.median(samples),
            _percentile(samples, 0.95))


if __name__ == "__main__":
    main()
