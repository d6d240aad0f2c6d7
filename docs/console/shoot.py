"""Screenshots of the web console for the README: a demo dataset, a real server, headless Chromium.

    python docs/console/shoot.py [--out docs/console] [--chromium /usr/bin/chromium]

Starts ``memos serve``'s app over a temporary home, adds a few conversations for two users through the
HTTP API, and saves PNGs of the main pages at 1280x800 (and the memories page at phone width).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger(__name__)

CONVERSATIONS: list[tuple[str, list[dict[str, Any]]]] = [
    ("ann_trips", [
        {"role": "user", "content": "I am planning a trip to Guangzhou this summer. Which chain hotels are there?",
         "message_id": "m-101", "chat_time": "2025-06-01 09:00"},
        {"role": "assistant", "content": "You could consider 7 Days Inn, Ji Hotel or Hilton.", "message_id": "m-102",
         "chat_time": "2025-06-01 09:01"},
        {"role": "user", "content": "I will choose 7 Days Inn because it is cheap.", "message_id": "m-103",
         "chat_time": "2025-06-01 09:02"},
    ]),
    ("ann_trips", [{"role": "user", "content": "I prefer window seats on long flights and I never check luggage.",
                    "message_id": "m-104", "chat_time": "2025-06-02 18:20"}]),
    ("ann_trips", [{"role": "user", "content": "My passport expires in March 2027, remind me before booking.",
                    "message_id": "m-105", "chat_time": "2025-06-03 08:05"}]),
    ("ann_trips", [{"role": "user", "content": "For Guangzhou I want to try dim sum at Tao Tao Ju.",
                    "message_id": "m-106", "chat_time": "2025-06-04 12:40"}]),
    ("ann_trips", [{"role": "user", "content": "I am vegetarian, so skip the roast goose recommendations.",
                    "message_id": "m-107", "chat_time": "2025-06-04 12:42"}]),
    ("ann_work", [{"role": "user", "content": "The quarterly report is due on the 15th; Priya reviews the numbers.",
                   "message_id": "w-1", "chat_time": "2025-06-05 10:00"}]),
    ("ann_work", [{"role": "user", "content": "Standup moved to 9:30 on Tuesdays and Thursdays.",
                   "message_id": "w-2", "chat_time": "2025-06-05 10:03"}]),
]

PLANNING: list[dict[str, Any]] = [
    {"role": role, "content": text, "message_id": f"p-{n}", "chat_time": f"2025-06-06 20:{n:02d}"}
    for n, (role, text) in enumerate([
        ("user", "Let us plan the Guangzhou days. I land at Baiyun airport on 12 July in the afternoon."),
        ("assistant", "Take metro line 3 from Baiyun airport to Tiyu Xilu; 7 Days Inn is a short walk from there."),
        ("user", "On 13 July I want the Canton Tower in the evening and Shamian Island in the morning."),
        ("assistant", "Shamian Island is quiet before 10am; the Canton Tower light show starts around 7:30pm."),
        ("user", "14 July is for Chen Clan Ancestral Hall and vegetarian dim sum near Liwan."),
        ("assistant", "The Chen Clan Ancestral Hall opens at 9am; Liwan has several vegetarian dim sum places."),
        ("user", "On 15 July I fly out at noon, so only breakfast near the hotel."),
        ("assistant", "Leave the hotel by 9:30am for a noon flight; the airport express takes about 45 minutes."),
        ("user", "Budget is about 600 yuan a day excluding the hotel."),
        ("assistant", "600 yuan a day covers food, metro and entry tickets comfortably in Guangzhou."),
        ("user", "Remind me to buy a Lingnan Pass card at the airport for the metro."),
        ("assistant", "Noted: buy a Lingnan Pass at Baiyun airport, it works on metro and buses."),
    ], 1)
]


def main(argv: list[str] | None = None) -> None:
    """Build the demo, take the screenshots, print their paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--chromium", default=os.environ.get("MEMOS_TEST_CHROMIUM", "/usr/bin/chromium"))
    args = parser.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="memos-console-demo-"))
    os.environ["MEMOS_HOME"] = str(home)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from playwright.sync_api import expect, sync_playwright

    from memos.server.app import BackgroundServer, create_app
    from streams.settings import load_settings

    server = BackgroundServer(create_app(load_settings("default"))).start()
    try:
        service = server.app.state.service
        for user in ("ann", "bob"):
            server.call(service.create_user(user))
        for cube in ("ann_trips", "ann_work"):
            server.call(service.create_cube(cube, owner_id="ann"))
        server.call(service.create_cube("team_notes", owner_id="bob"))
        server.call(service.share_cube("ann_work", owner_id="ann", user_id="bob", access="read"))
        server.call(service.share_cube("team_notes", owner_id="bob", user_id="ann", access="read"))
        ann = server.call(service.issue_key("ann"))
        bob = server.call(service.issue_key("bob"))

        def add(key: str, cube: str, messages: list[dict[str, Any]], mode: str = "fine") -> None:
            body = {"writable_cube_ids": [cube], "messages": messages, "async_mode": "sync", "mode": mode}
            resp = httpx.post(f"{server.url}/product/add", json=body, headers={"Authorization": f"Bearer {key}"},
                              timeout=300)
            resp.raise_for_status()

        for cube, messages in CONVERSATIONS:
            add(ann, cube, messages)
        add(bob, "team_notes", [{"role": "user", "content": "Team offsite is in Lisbon, 12-14 September."}])
        add(ann, "ann_trips", PLANNING, mode="fast")  # a long chat: fast windows linked by FOLLOWS edges
        args.out.mkdir(parents=True, exist_ok=True)
        shots = []
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            def shot(name: str, *, full_page: bool = False) -> None:
                path = args.out / f"{name}.png"
                page.screenshot(path=str(path), full_page=full_page)
                shots.append(path)

            page.goto(server.url + "/console")
            page.get_by_label("API key").fill(ann)
            page.get_by_role("button", name="Open").click()
            expect(page.locator("#cubes")).to_be_visible()
            shot("cubes")
            page.goto(server.url + "/console/cubes/ann_trips/memories")
            expect(page.locator("#memories")).to_be_visible()
            shot("memories")
            page.goto(server.url + "/console/search?q=Which+hotel+in+Guangzhou%3F&cube=ann_trips&cube=ann_work&top_k=5")
            expect(page.locator("#results")).to_be_visible()
            shot("search", full_page=True)
            page.locator("#results td.text a").first.click()
            expect(page.locator("#memory-text")).to_be_visible()
            shot("memory", full_page=True)
            page.goto(server.url + "/console/cubes/ann_trips/graph")
            expect(page.locator("#graph svg")).to_be_visible()
            shot("graph")
            page.goto(server.url + "/console/feed")
            expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
            add(ann, "ann_trips", [{"role": "user", "content": "Booked 7 Days Inn Guangzhou for 12-15 July."}])
            add(bob, "team_notes", [{"role": "user", "content": "Offsite agenda: roadmap on day one."}])
            expect(page.locator("#feed-rows")).to_contain_text("roadmap")
            shot("feed")
            page.goto(server.url + "/console/tasks")
            expect(page.locator("#tasks")).to_be_visible()
            shot("tasks")
            page.goto(server.url + "/console/usage")
            expect(page.locator("main h1")).to_have_text("Model usage")
            shot("usage")
            page.set_viewport_size({"width": 390, "height": 844})
            page.goto(server.url + "/console/cubes/ann_trips/memories")
            expect(page.locator("#memories")).to_be_visible()
            shot("memories-phone")
            browser.close()
        for path in shots:
            print(path)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
