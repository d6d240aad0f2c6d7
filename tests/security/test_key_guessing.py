"""Guessing secrets of a known API key id costs the server one hash per pause, not one per request."""

from __future__ import annotations

from pathlib import Path

from tests.security.conftest import start_server, tenant


def test_guesses_at_a_known_key_id_are_refused_unhashed(tmp_path: Path) -> None:
    server = start_server(tmp_path, door={"key_retry_s": 60.0})  # a pause no test run outlasts
    try:
        alice, bob = tenant(server, "alice"), tenant(server, "bob")
        with alice.client(server) as a, bob.client(server) as b:
            assert a.get("/product/scheduler/allstatus").status_code == 200  # alice's key is verified, remembered
            key_id = alice.key.split("_")[1]
            guess = {"Authorization": f"Bearer mk_{key_id}_not-the-secret"}
            first = b.get("/product/scheduler/allstatus", headers=guess)
            assert first.status_code == 401  # hashed once, and wrong
            again = b.get("/product/scheduler/allstatus", headers=guess)
            assert again.status_code == 429 and again.headers["Retry-After"] == "60", again.text
            assert "retry later" in again.json()["message"]
            # the key's owner, already verified, and every other key go on working
            assert a.get("/product/scheduler/allstatus").status_code == 200
            assert b.get("/product/scheduler/allstatus").status_code == 200
            unknown = b.get("/product/scheduler/allstatus", headers={"Authorization": "Bearer mk_nobody_x"})
            assert unknown.status_code == 401  # no such key id: nothing to hash, nothing to pause
    finally:
        server.stop()
