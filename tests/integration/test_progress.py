"""Progress events on the spawn page and spawn-phase metrics, from a real spawn."""

from __future__ import annotations

import json
import re

import pytest
import requests


@pytest.fixture(scope="module")
def slow_page_hub(make_hub):
    # slow_spawn_timeout 0: the REST call returns at once and the spawn is followed through its progress
    # stream, as the spawn-pending page does in a browser.
    return make_hub("progress", extra_config='c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}')


def test_progress_stream_tells_the_user_what_happens_and_how_to_ssh_in(slow_page_hub):
    hub = slow_page_hub
    hub.create_user("pat")
    r = hub.api("POST", "/users/pat/server", json={})
    assert r.status_code == 202
    token = hub.token("pat")
    stream = requests.get(
        f"{hub.url}/hub/api/users/pat/server/progress",
        headers={"Authorization": f"token {token}"},
        stream=True,
        timeout=120,
    )
    events = []
    for line in stream.iter_lines(decode_unicode=True):
        if line.startswith("data:"):
            events.append(json.loads(line[5:]))
            if events[-1].get("ready") or events[-1].get("failed"):
                break
    messages = [e.get("message", "") for e in events]
    assert events[-1].get("ready"), messages
    assert any(m.startswith("Preparing the desktop for pat") for m in messages), messages
    ssh_lines = [m for m in messages if m.startswith("SSH: ssh -p ")]
    assert ssh_lines and re.fullmatch(r"SSH: ssh -p \d+ pat@127\.0\.0\.1", ssh_lines[0]), messages
    assert any("Starting container" in m for m in messages), messages
    progress = [e["progress"] for e in events if "progress" in e]
    assert progress == sorted(progress)  # the bar only moves forward


def test_spawn_phases_are_histograms_on_hub_metrics(slow_page_hub):
    hub = slow_page_hub
    hub.wait_ready("pat")
    for phase in ("prepare", "container", "server"):
        assert hub.metric(f'devdock_spawn_phase_seconds_count{{phase="{phase}"}}') >= 1, phase
