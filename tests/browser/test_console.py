"""The web console in headless Chromium: log in, browse, search, lineage, live feed, actions, tenancy.

Every wait is on page state (Playwright's auto-waiting ``expect``); nothing sleeps.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.browser.conftest import Console, Tenant

pytestmark = pytest.mark.timeout(600)


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


def _memory_ids(added: dict[str, Any]) -> list[str]:
    """Ids of the memories a sync ``/product/add`` reports (its data: one entry per memory)."""
    return [m["memory_id"] for m in added["data"]]


def login(page: Any, console: Console, tenant: Tenant, path: str = "/console") -> None:
    """Open the console and enter the key with the keyboard."""
    expect = _expect()
    page.goto(console.url + path)
    key = page.get_by_label("API key")
    page.base_url = console.url + "/"
    expect(key).to_be_focused()
    page.keyboard.type(tenant.key)
    page.keyboard.press("Enter")
    expect(page.locator("#who-name")).to_have_text(tenant.user_id)


def _no_key_in_urls(page: Any, tenant: Tenant) -> None:
    """The key never travels in a URL, and nothing is loaded from anywhere but the server (no CDN)."""
    assert page.requested, "no request was recorded"
    foreign = [u for u in page.requested if not u.startswith(page.base_url) and not u.startswith("data:")]
    assert not foreign, f"the console loaded from elsewhere: {foreign}"
    secret = tenant.key.split("_", 2)[2]  # mk_<key id>_<secret>; the secret itself may hold "_"
    leaked = [u for u in page.requested if tenant.key in u or secret in u]
    assert not leaked, f"the API key appeared in request URLs: {leaked}"


def test_login_browse_search_lineage(page: Any, console: Console) -> None:
    """Log in, open a cube, search it, open a result's lineage, see its source turns and history."""
    expect = _expect()
    page.goto(console.url + "/console")
    login_error = page.locator("#login-error")
    page.get_by_label("API key").fill("mk_nope_wrong")
    page.get_by_role("button", name="Open").click()
    expect(login_error).to_contain_text("refused")

    login(page, console, console.ann)
    cubes = page.locator("#cubes tbody tr")
    expect(cubes).to_have_count(1)
    row = page.locator('#cubes tr[data-cube="ann_trips"]')
    expect(row).to_contain_text("ann")
    expect(row).to_contain_text("owner")
    expect(row.locator(".chip").first).to_contain_text("Memory")  # counts per type (the page refreshes
    # itself while the log digest is read)
    total = int(row.locator("td.n").first.inner_text())
    assert total >= 1

    row.get_by_role("link", name="ann_trips").click()
    expect(page).to_have_url(re.compile(r"/console/cubes/ann_trips/memories$"))
    memories = page.locator("#memories tbody tr")
    expect(memories).to_have_count(total)
    expect(page.locator("#memories")).to_contain_text("7 Days Inn")

    # the filter form narrows the table (and puts the filters in the URL, never the key)
    page.get_by_label("Text").fill("Guangzhou")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"q=Guangzhou"))
    expect(memories.first).to_contain_text("Guangzhou")
    for text in memories.locator("td.text").all_inner_texts():
        assert "guangzhou" in text.lower()

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Search").click()
    query = page.get_by_label("Query")
    query.fill("Which hotel did I choose?")
    page.get_by_role("button", name="Search").click()
    results = page.locator("#results tbody tr")
    expect(results.first).to_be_visible()
    expect(page.locator("#context")).to_contain_text("## Memories:")
    expect(page.locator("#results")).to_contain_text("7 Days Inn")
    relativity = results.first.locator("td.n").nth(1).inner_text()
    assert 0.0 < float(relativity.split()[-1]) <= 1.0
    context = page.locator("#context").inner_text()
    assert len(context.split()) <= 1000 + 2 * results.count() + 2

    results.first.locator("td.text a").click()
    expect(page).to_have_url(re.compile(r"/console/cubes/ann_trips/memories/[0-9a-f-]{36}$"))
    expect(page.locator("#sources")).to_contain_text("message #")
    expect(page.locator("#sources")).to_contain_text("user")
    expect(page.locator("ol.history")).to_contain_text("MemoryAdded")
    text = page.locator("#memory-text").inner_text()
    assert text.strip()
    _no_key_in_urls(page, console.ann)

    # back and forward work on the history stack
    page.go_back()
    expect(page.locator("#results")).to_be_visible()


def test_feed_shows_a_new_memory_live_and_resumes_after_reload(page: Any, console: Console) -> None:
    """A memory added through the HTTP API appears on the open feed page without a reload; after a
    reload the page keeps what it showed and continues from its cursor."""
    expect = _expect()
    login(page, console, console.ann, "/console/feed")
    state = page.locator("#feed-state")
    expect(state).to_have_attribute("data-state", "live")
    rows = page.locator("#feed-rows tr")
    expect(rows).to_have_count(0)

    first = _memory_ids(console.add(console.ann, "ann_trips",
                                    [{"role": "user", "content": "I adopted a grey cat named Miso."}]))
    assert first
    for memory_id in first:
        expect(page.locator(f'#feed-rows tr[data-type="MemoryAdded"][data-memory="{memory_id}"]')).to_have_count(1)
    expect(page.locator("#feed-rows")).to_contain_text("Miso")

    page.reload()
    expect(state).to_have_attribute("data-state", "live")
    second = _memory_ids(console.add(console.ann, "ann_trips",
                                     [{"role": "user", "content": "Miso likes sardines best."}]))
    for memory_id in second:
        expect(page.locator(f'#feed-rows tr[data-type="MemoryAdded"][data-memory="{memory_id}"]')).to_have_count(1)
    # what was shown before the reload is still there, once: the page resumed from its cursor
    for memory_id in first:
        expect(page.locator(f'#feed-rows tr[data-type="MemoryAdded"][data-memory="{memory_id}"]')).to_have_count(1)
    expect(page.locator('#feed-rows tr[data-type="MemoryAdded"]')).to_have_count(len(first) + len(second))
    _no_key_in_urls(page, console.ann)


def test_lineage_of_refined_and_revised_memories(page: Any, console: Console) -> None:
    """An async add keeps a fast memory first, then retires it for the refined ones: its page names the
    reason and links the successors, and a successor links back. Saying the fact again revises the
    successor: its history shows the revision."""
    expect = _expect()
    fact = [{"role": "user", "content": "I keep a tortoise called Speedy at home in Porto.", "message_id": "f-1"}]
    body = {"user_id": "ann", "writable_cube_ids": ["ann_trips"], "messages": fact, "async_mode": "async",
            "mode": "fine"}
    resp = httpx.post(f"{console.url}/product/add", json=body, headers=console.ann.headers, timeout=120)
    assert resp.status_code == 200, resp.text
    task_id = resp.json()["data"][0]["task_id"]
    service = console.server.app.state.service
    waited = console.server.call(service.wait_tasks("ann", task_id=task_id, timeout_s=120))
    assert waited.done, waited
    # the task's status and the memory events are separate projections: read-your-writes on the latter
    console.server.call(service.rt.settle([]))
    every = console.server.call(service.get_all("ann", "ann_trips", include_retired=True))
    refined = [m for m in every if m["metadata"]["status"] == "retired" and "Speedy" in m["memory"]
               and m["metadata"]["successor_ids"]]
    assert refined, "the fast memory of an async fine add should be retired for its refined successors"
    old = refined[0]
    successor_ids = old["metadata"]["successor_ids"]

    login(page, console, console.ann, f"/console/cubes/ann_trips/memories/{old['id']}")
    expect(page.locator("#memory-status")).to_contain_text("retired")
    expect(page.locator("#memory-status")).to_contain_text("reason")
    expect(page.locator("ol.history")).to_contain_text("MemoryRetired")
    expect(page.locator("#sources")).to_contain_text("f-1")
    successors = page.locator("#successors a")
    expect(successors).to_have_count(len(successor_ids))
    successors.first.click()
    expect(page).to_have_url(re.compile("/memories/" + successor_ids[0] + "$"))
    old_id = old["id"]
    expect(page.locator(f'#predecessors a[href$="{old_id}"]')).to_have_count(1)

    console.add(console.ann, "ann_trips", fact, mode="fine")
    revised = console.server.call(service.get_memory("ann", "ann_trips", successor_ids[0]))
    assert revised["metadata"]["revision"] >= 1
    page.reload()
    expect(page.locator("#memory-status")).to_contain_text(f"revision {revised['metadata']['revision']}")
    expect(page.locator("ol.history")).to_contain_text("MemoryRevised")


def test_delete_memory_with_confirmation(page: Any, console: Console) -> None:
    """Delete asks first (cancel keeps it), then the memory is gone from the table and from search."""
    expect = _expect()
    console.add(console.ann, "ann_trips", [{"role": "user", "content": "My locker code is tangerine."}])
    login(page, console, console.ann, "/console/cubes/ann_trips/memories?q=tangerine")
    row = page.locator("#memories tbody tr", has_text="tangerine")
    expect(row).to_have_count(1)
    memory_id = row.get_attribute("data-id")

    row.get_by_role("button", name=re.compile("Delete")).click()
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("tangerine")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(row).to_have_count(1)

    row.get_by_role("button", name=re.compile("Delete")).click()
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator("#memories tbody tr", has_text="tangerine")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("No memories match")

    # the application layer agrees: retired, and the page of the memory says why and by whom
    service = console.server.app.state.service
    view = console.server.call(service.get_memory("ann", "ann_trips", memory_id))
    assert view["metadata"]["status"] == "retired"
    page.goto(f"{console.url}/console/cubes/ann_trips/memories/{memory_id}")
    expect(page.locator("#memory-status")).to_contain_text("retired")
    expect(page.locator("#memory-status")).to_contain_text("deleted")
    expect(page.locator("ol.history")).to_contain_text("MemoryRetired")
    expect(page.locator("ol.history")).to_contain_text("by ann")


def test_replay_shows_progress_and_keeps_the_cube(page: Any, console: Console) -> None:
    """Replay asks for confirmation, shows progress, completes, and the cube holds the same memories."""
    expect = _expect()
    login(page, console, console.ann, "/console/cubes/ann_trips/memories")
    expect(page.locator("#memories tbody tr").first).to_be_visible()
    before = page.locator("#memories tbody tr").count()
    assert before >= 1
    page.get_by_role("button", name="Replay cube").click()
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    job = page.locator("#job")
    expect(job).to_have_attribute("data-state", "completed")
    expect(job).to_contain_text("events applied")
    expect(page.locator("#job progress")).to_be_visible()
    page.reload()
    expect(page.locator("#memories tbody tr")).to_have_count(before)


def test_forget_cube_with_confirmation(page: Any, console: Console) -> None:
    """Forget erases a cube after confirmation: gone from the list, and unknown to the API afterwards."""
    expect = _expect()
    service = console.server.app.state.service
    console.server.call(service.create_cube("ann_scratch", owner_id="ann"))
    console.add(console.ann, "ann_scratch", [{"role": "user", "content": "Scratch note about a blue bicycle."}])
    login(page, console, console.ann, "/console/cubes/ann_scratch/memories")
    expect(page.locator("#memories")).to_contain_text("bicycle")
    page.get_by_role("button", name="Forget cube").click()
    page.locator("#confirm").get_by_role("button", name="Confirm").click()
    expect(page).to_have_url(re.compile(r"/console/cubes$"))
    expect(page.locator('#cubes tr[data-cube="ann_trips"]')).to_have_count(1)
    expect(page.locator('#cubes tr[data-cube="ann_scratch"]')).to_have_count(0)
    body = {"user_id": "ann", "query": "bicycle", "readable_cube_ids": ["ann_scratch"]}
    resp = httpx.post(f"{console.url}/product/search", json=body, headers=console.ann.headers, timeout=60)
    assert resp.status_code == 404, resp.text
    page.goto(console.url + "/console/cubes/ann_scratch/memories")
    expect(page.locator("main h1")).to_have_text("Not found")


def test_graph_is_drawn_and_nodes_open_memories(page: Any, console: Console) -> None:
    """The graph page draws one SVG node per memory; activating a node with the keyboard opens it."""
    expect = _expect()
    login(page, console, console.ann, "/console/cubes/ann_trips/graph")
    nodes = page.locator("#graph svg a.node")
    listed = page.locator(".nodelist li")
    expect(nodes.first).to_be_visible()
    assert nodes.count() == listed.count() >= 1
    # every node is laid out inside the canvas (the view box), not pushed off it by the forces
    box = page.locator("#graph svg").get_attribute("viewBox").split()
    width, height = float(box[2]), float(box[3])
    for cx, cy in page.locator("#graph svg circle").evaluate_all(
            "cs => cs.map(c => [c.cx.baseVal.value, c.cy.baseVal.value])"):
        assert 0 <= cx <= width and 0 <= cy <= height, (cx, cy)
    page.get_by_role("button", name="Zoom in").click()
    expect(page.locator("#graph svg > g")).to_have_attribute("transform", re.compile(r"scale\(1\.25\)"))
    nodes.first.focus()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/console/cubes/ann_trips/memories/[0-9a-f-]{36}$"))
    expect(page.locator("#memory-text")).to_be_visible()


def test_tasks_and_usage_pages(page: Any, console: Console) -> None:
    """Tasks list the adds with their status; usage lists the embedder's calls per model and cube."""
    expect = _expect()
    login(page, console, console.ann, "/console/tasks")
    expect(page.locator("#tasks")).to_contain_text("completed")
    expect(page.locator("#tasks")).to_contain_text("ann_trips")
    expect(page.locator("#tasks")).not_to_contain_text("bob_notes")
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Usage").click()
    expect(page.locator("#usage-cubes")).to_contain_text("ann_trips")
    expect(page.locator("#usage-cubes")).not_to_contain_text("bob_notes")
    calls = page.locator("#usage-models tbody tr").first.locator("td.n").first.inner_text()
    assert int(calls) >= 1


def test_second_user_sees_none_of_the_first_users_cubes(page: Any, console: Console) -> None:
    """Bob's key lists only bob's cube; ann's cube answers like an unknown one, in every view."""
    expect = _expect()
    login(page, console, console.bob)
    expect(page.locator("#cubes tbody tr")).to_have_count(1)
    expect(page.locator("#cubes")).to_contain_text("bob_notes")
    expect(page.locator("main")).not_to_contain_text("ann_trips")
    for path in ("/console/cubes/ann_trips/memories", "/console/cubes/ann_trips/graph",
                 "/console/search?q=hotel&cube=ann_trips", "/console/tasks?cube=ann_trips"):
        page.goto(console.url + path)
        expect(page.locator("main h1")).to_have_text("Not found")
        expect(page.locator("main")).not_to_contain_text("7 Days Inn")
    page.goto(console.url + "/console/search?q=hotel")
    expect(page.get_by_label("ann_trips")).to_have_count(0)
    # and the data routes refuse without a key at all
    assert httpx.get(f"{console.url}/v1/console/cubes", timeout=30).status_code == 401


def test_phone_width_and_keyboard(browser: Any, console: Console) -> None:
    """At phone width the page does not scroll sideways; the nav is reachable with Tab; text selects."""
    expect = _expect()
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.requested = []
        login(page, console, console.ann, "/console/cubes/ann_trips/memories")
        expect(page.locator("#memories")).to_be_visible()
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0
        page.keyboard.press("/")
        expect(page.get_by_label("Text")).to_be_focused()
        page.locator("header .brand").focus()
        page.keyboard.press("Tab")
        expect(page.get_by_role("navigation", name="Console").get_by_role("link", name="Cubes")).to_be_focused()
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page).to_have_url(re.compile(r"/console/search$"))
        page.goto(console.url + "/console/cubes/ann_trips/memories")
        page.locator("#memories td.text a").first.click()
        text = page.locator("#memory-text")
        expect(text).to_be_visible()
        text.click(click_count=3)
        selected = page.evaluate("window.getSelection().toString()")
        assert selected.strip() and selected.strip() in text.inner_text()
    finally:
        context.close()


def test_a_page_load_asks_for_its_fragment_once_and_the_assets_come_from_the_cache(
        page: Any, console: Console) -> None:
    """After the first page, a full load (reload or typed URL) fetches the shell and one fragment: the
    assets' versioned URLs are kept by the browser and the key's user is known to the tab."""
    expect = _expect()
    login(page, console, console.ann, "/console/cubes/ann_trips/memories")
    expect(page.locator("#memories tbody tr").first).to_be_visible()
    fetched: list[str] = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto(console.url + "/console/cubes/ann_trips/graph")
    expect(page.locator("#graph svg a.node").first).to_be_visible()
    expect(page.locator("#who-name")).to_have_text("ann")
    paths = [httpx.URL(u).path for u in fetched]
    assert paths.count("/v1/console/cubes/ann_trips/graph") == 1, paths
    assert "/v1/console/whoami" not in paths, paths
    cached = page.evaluate("performance.getEntriesByType('resource')"
                           ".filter(e => e.name.includes('/console/static/')).map(e => e.transferSize)")
    assert cached and all(size == 0 for size in cached), cached  # from the browser's cache, not the wire


def test_assets_are_versioned_cached_and_compressed(console: Console) -> None:
    """The shell names its assets by content hash; those URLs are cacheable for good, revalidate by ETag,
    and go gzipped, as do large fragments."""
    shell = httpx.get(console.url + "/console", timeout=30)
    urls = re.findall(r'(?:src|href)="(/console/static/[^"?]+\?v=[0-9a-f]+)"', shell.text)
    assert len(urls) == 2, shell.text
    for url in urls:
        resp = httpx.get(console.url + url, headers={"Accept-Encoding": "gzip"}, timeout=30)
        assert resp.status_code == 200
        assert "immutable" in resp.headers["cache-control"]
        assert resp.headers["content-encoding"] == "gzip"
        assert len(resp.content) > 1000  # httpx decompressed it
        etag = resp.headers["etag"]
        again = httpx.get(console.url + url, headers={"If-None-Match": etag}, timeout=30)
        assert again.status_code == 304
        bare = httpx.get(console.url + url.split("?")[0], headers={"Accept-Encoding": "identity"}, timeout=30)
        assert bare.headers["cache-control"] == "no-cache" and "content-encoding" not in bare.headers
        assert bare.content == resp.content
    table = httpx.get(console.url + "/v1/console/cubes/ann_trips/memories",
                      headers={**console.ann.headers, "Accept-Encoding": "gzip"}, timeout=30)
    assert table.status_code == 200 and table.headers["content-encoding"] == "gzip"
    assert 'id="memories"' in table.text
