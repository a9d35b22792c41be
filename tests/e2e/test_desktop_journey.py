"""What a person sees: log in, land in JupyterLab, open the desktop, and the desktop is drawn."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.e2e.desktop import SHOTS, desktop_drawn, frame_stats, login, wait_for_desktop_frame


@pytest.fixture(scope="module")
def hub(make_hub):
    """A hub of the browser tier's (the session's hub starts desktops when they are first opened)."""
    return make_hub("desktop-journey")


def test_login_lab_and_desktop_in_the_browser(hub, page):
    SHOTS.mkdir(parents=True, exist_ok=True)
    login(page, hub, "frank")

    # The hub spawns the server and the browser lands in JupyterLab.
    page.wait_for_url("**/user/frank/lab**", timeout=180_000)
    page.wait_for_selector(".jp-LauncherCard", timeout=120_000)
    # The launcher offers the desktop next to notebooks and the terminal.
    assert page.locator(".jp-LauncherCard", has_text="Desktop").count() >= 1
    assert page.locator(".jp-LauncherCard", has_text="Terminal").count() >= 1
    page.screenshot(path=SHOTS / "lab.png")

    page.goto(f"{hub.url}/user/frank/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    canvas = page.locator("#screen canvas")
    png = wait_for_desktop_frame(canvas)
    (SHOTS / "desktop-canvas.png").write_bytes(png)
    page.screenshot(path=SHOTS / "desktop.png")

    image = Image.open(io.BytesIO(png)).convert("RGB")
    width, height = image.size
    assert width >= 800 and height >= 500, image.size
    assert desktop_drawn(png), frame_stats(png)


def test_other_user_cannot_open_first_users_desktop(hub, page):
    hub.ensure_running("frank")
    login(page, hub, "grace")
    page.wait_for_url("**/user/grace/**", timeout=180_000)
    response = page.goto(f"{hub.url}/user/frank/desktop/")
    assert response.status == 403
    assert "frank" not in page.title()
    assert page.locator("#screen canvas").count() == 0
