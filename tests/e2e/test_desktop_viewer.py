"""devdock's desktop viewer in Chromium through the real hub and proxy: it reconnects by itself after the proxy
restarts (no reload), says so when the server is gone, shares the clipboard both ways through the browser's
Clipboard API, makes the session follow the window's size, and the session runs on with no tab open."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import time

import pytest
from PIL import Image

from tests.e2e.desktop import (
    SHOTS,
    as_user,
    open_desktop,
    screen_size,
    until_on_the_desktops_clipboard,
    wait_for_desktop_frame,
)
from tests.harness import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture(scope="module")
def hub(make_hub):
    # The hub looks after its proxy every 2 s (JupyterHub restarts a proxy that died, and puts the routes back).
    return make_hub("viewer", extra_config="c.ConfigurableHTTPProxy.check_running_interval = 2\n")


def _proxy_pid(hub) -> int:
    out = subprocess.run(["pgrep", "-f", f"configurable-http-proxy.*--api-port {hub.proxy_api_port}"],
                         capture_output=True, text=True)  # fmt: skip
    pids = [int(p) for p in out.stdout.split()]
    assert pids, "the hub's configurable-http-proxy is not running"
    return pids[0]


def test_desktop_reconnects_by_itself_after_a_proxy_restart_without_a_reload(hub, page):
    hub.spawn("dv-rho")
    open_desktop(page, hub, "dv-rho")
    container = hub.container("dv-rho")
    as_user(container, "(xfce4-terminal --title devdock-still-here >/dev/null 2>&1 &) ; sleep 2")
    page.evaluate("window.devdockTestMarker = 'the same page'")
    old = _proxy_pid(hub)
    subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(old)], check=True)
    page.wait_for_function("document.body.dataset.state === 'reconnecting'", timeout=30_000)
    assert "Reconnecting by itself" in page.locator("#devdock-banner").inner_text()
    page.screenshot(path=SHOTS / "desktop-reconnecting.png")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=90_000)
    assert _proxy_pid(hub) != old  # the proxy really restarted
    assert page.evaluate("window.devdockTestMarker") == "the same page"  # no reload
    assert page.locator("#devdock-banner").is_hidden()
    wait_for_desktop_frame(page.locator("#screen canvas"))
    # The session is as it was: the window opened before is still there.
    assert "devdock-still-here" in as_user(container, "xwininfo -root -tree")
    page.screenshot(path=SHOTS / "desktop-reconnected.png")


def test_desktop_says_the_server_is_gone_and_links_to_the_hub(hub, page):
    hub.ensure_running("dv-rho")
    open_desktop(page, hub, "dv-rho")
    hub.stop_server("dv-rho")
    page.wait_for_function("document.body.dataset.state === 'gone'", timeout=60_000)
    banner = page.locator("#devdock-banner")
    assert "Your server has stopped" in banner.inner_text()
    assert banner.locator("a").get_attribute("href").endswith("/hub/home")
    page.screenshot(path=SHOTS / "desktop-server-gone.png")


def test_desktop_clipboard_both_ways_through_the_clipboard_api_and_a_text_copied_again_goes_again(hub, browser):
    hub.spawn("dv-cleo")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
    page = context.new_page()
    try:
        open_desktop(page, hub, "dv-cleo")
        container = hub.container("dv-cleo")
        assert "shared with this computer" in page.locator("#clipboard-mode").inner_text()
        copied_here = "copied in the browser"

        def until_on_the_desktop(text: str) -> None:
            until_on_the_desktops_clipboard(
                container,
                lambda: as_user(container, "xclip -o -selection clipboard") == text,
                page.locator("#screen canvas").click,
                30,
            )

        # Copied on this computer: back on the desktop, it pastes there.
        page.evaluate(f"navigator.clipboard.writeText({copied_here!r})")
        until_on_the_desktop(copied_here)
        # Copied on the desktop: the page's clipboard (this computer's) has it, without the popover.
        as_user(container, "printf 'copied on the desktop: 你好 ✓' | xclip -selection clipboard")
        page.wait_for_function(
            "navigator.clipboard.readText().then(t => window.devdockSeen = t); window.devdockSeen === "
            "'copied on the desktop: 你好 ✓'",
            timeout=30_000,
        )
        assert page.locator("#clipboard-container").is_hidden()
        # The first text copied here again: the desktop has something else now, so it goes again.
        page.evaluate(f"navigator.clipboard.writeText({copied_here!r})")
        until_on_the_desktop(copied_here)
    finally:
        context.close()
    hub.stop_server("dv-cleo")


def _clipboard_of(page) -> str:
    """What this browser's clipboard (its computer's) holds."""
    return page.evaluate("navigator.clipboard.readText()")


def _open_as_admin(page, hub, owner: str) -> None:
    """The admin logs in and opens ``owner``'s desktop, allowing the hub's access to that server once."""
    page.goto(f"{hub.url}/hub/login?next=/user/{owner}/desktop/")
    page.fill("input#username_input", "admin")
    page.fill("input#password_input", hub.password)
    page.click("#login_submit")
    page.wait_for_url(re.compile(rf".*(/oauth2/authorize|/user/{re.escape(owner)}/desktop/).*"), timeout=60_000)
    if "/oauth2/authorize" in page.url:  # JupyterHub asks an admin before it opens another user's server
        page.click("form [type=submit]")
    page.wait_for_url(f"**/user/{owner}/desktop/", timeout=60_000)
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    wait_for_desktop_frame(page.locator("#screen canvas"))


def test_an_admin_who_opens_a_users_desktop_shares_no_clipboard_with_that_user_while_the_owner_does(hub, browser):
    """An admin opens dv-ada's desktop in a browser of their own (another computer's clipboard), with every clipboard
    permission granted: text copied on the desktop does not land in the admin's clipboard, and what the admin copied
    never reaches the desktop; the admin reads the desktop's clipboard in the popover when they ask. dv-ada's own
    viewer, open at the same time, shares it both ways (the positive control)."""
    hub.spawn("dv-ada")
    container = hub.container("dv-ada")
    admins_browser = browser.browser_type.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
    mine = browser.new_context(viewport={"width": 1280, "height": 800})
    theirs = admins_browser.new_context(viewport={"width": 1280, "height": 800})
    for context in (mine, theirs):
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
    owner, admin = mine.new_page(), theirs.new_page()
    try:
        open_desktop(owner, hub, "dv-ada")
        _open_as_admin(admin, hub, "dv-ada")
        assert "shared with this computer" in owner.locator("#clipboard-mode").inner_text()
        assert "not shared (dv-ada's desktop)" in admin.locator("#clipboard-mode").inner_text()
        admin.evaluate("navigator.clipboard.writeText('the admin keeps this')")
        assert _clipboard_of(admin) == "the admin keeps this"

        # Copied on the desktop: in the owner's clipboard, in the admin's popover, not in the admin's clipboard.
        on_desktop = "copied on dv-ada's desktop"
        as_user(container, f"printf %s {on_desktop!r} | xclip -selection clipboard")
        owner.wait_for_function(
            f"navigator.clipboard.readText().then(t => window.devdockSeen = t); window.devdockSeen === {on_desktop!r}",
            timeout=30_000,
        )
        admin.wait_for_function(f"document.getElementById('clipboard-text').value === {on_desktop!r}", timeout=30_000)
        assert _clipboard_of(admin) == "the admin keeps this"
        assert admin.locator("#clipboard-container").is_hidden()
        admin.click("#clipboard-button")  # on request: the popover shows the desktop's clipboard
        assert admin.locator("#clipboard-text").input_value() == on_desktop

        # Copied in the admin's browser: the admin comes back to the desktop (clicks, focus) again and again, and the
        # desktop's clipboard keeps what the desktop copied.
        admin.click("#clipboard-button")
        admin.evaluate("navigator.clipboard.writeText('the admin password')")
        for _ in range(10):
            admin.locator("#screen canvas").click()
            admin.evaluate("window.dispatchEvent(new Event('focus'))")
            time.sleep(0.5)
            assert as_user(container, "xclip -o -selection clipboard") == on_desktop
        # The owner's copy does reach it (the control: the same way in, through the owner's viewer).
        owner.evaluate("navigator.clipboard.writeText('copied by dv-ada')")
        until_on_the_desktops_clipboard(
            container,
            lambda: as_user(container, "xclip -o -selection clipboard") == "copied by dv-ada",
            owner.locator("#screen canvas").click,
            30,
        )
        assert _clipboard_of(admin) == "the admin password"  # and it never came back to the admin's clipboard
        admin.screenshot(path=SHOTS / "desktop-admin-clipboard-not-shared.png")
    finally:
        mine.close()
        theirs.close()
        admins_browser.close()
    hub.stop_server("dv-ada")


def test_desktop_size_follows_the_window_and_the_session_runs_on_without_a_tab(hub, browser):
    hub.spawn("dv-sam")
    container = hub.container("dv-sam")
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    page = context.new_page()
    open_desktop(page, hub, "dv-sam")

    def fits() -> bool:
        box = page.locator("#screen").bounding_box()
        return screen_size(container) == (int(box["width"]), int(box["height"]))

    deadline = time.monotonic() + 30
    while not fits():
        assert time.monotonic() < deadline, (screen_size(container), page.locator("#screen").bounding_box())
        time.sleep(0.5)
    page.set_viewport_size({"width": 1000, "height": 640})
    deadline = time.monotonic() + 30
    while not fits():
        assert time.monotonic() < deadline, (screen_size(container), page.locator("#screen").bounding_box())
        time.sleep(0.5)
    assert screen_size(container)[0] == 1000
    # No tab open: the session and its windows keep running; the next tab finds them.
    as_user(container, "(xfce4-terminal --title devdock-no-tab >/dev/null 2>&1 &) ; sleep 2")
    deadline = time.monotonic() + 30  # its window is there before the tab goes (a loaded machine maps it late)
    while "devdock-no-tab" not in as_user(container, "xwininfo -root -tree"):
        assert time.monotonic() < deadline, "the terminal's window never appeared"
        time.sleep(0.5)
    context.close()
    time.sleep(5)
    assert "devdock-no-tab" in as_user(container, "xwininfo -root -tree")
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    open_desktop(page, hub, "dv-sam", drawn=False)  # a dark terminal fills much of it: not the empty desktop
    assert "devdock-no-tab" in as_user(container, "xwininfo -root -tree")
    page.wait_for_timeout(2000)
    page.screenshot(path=SHOTS / "desktop-after-no-tab.png")
    context.close()
    hub.stop_server("dv-sam")


def test_desktop_opengl_and_fonts_of_every_script_seen_in_chromium(hub, page):
    """What a person sees: glxgears drawing (Mesa's software renderer here) and a terminal with CJK, Devanagari and
    emoji text, in the desktop as Chromium shows it."""
    hub.spawn("dv-gus")
    container = hub.container("dv-gus")
    before = open_desktop(page, hub, "dv-gus")
    text = "你好 こんにちは 안녕하세요 नमस्ते 😀"
    terminal = f"xfce4-terminal --geometry=60x8+40+60 --title fonts -x sh -c 'echo \"{text}\"; sleep 600'"
    as_user(container, f"({terminal} >/dev/null 2>&1 &); (glxgears -geometry 300x300+700+120 >/dev/null 2>&1 &)")
    time.sleep(4)
    windows = as_user(container, "xwininfo -root -tree")
    assert '"fonts"' in windows and '"glxgears"' in windows, windows
    page.wait_for_timeout(2000)
    shot = page.locator("#screen canvas").screenshot()
    (SHOTS / "desktop-gl-fonts.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    # glxgears draws a red, a green and a blue gear: strongly coloured pixels the empty desktop does not have.
    empty = Image.open(io.BytesIO(before)).convert("RGB")

    def gear_pixels(img) -> dict[str, int]:
        counts = {"red": 0, "green": 0, "blue": 0}
        for r, g, b in getattr(img, "get_flattened_data", img.getdata)():
            if r > 150 and g < 60 and b < 60:
                counts["red"] += 1
            elif g > 150 and r < 60 and b < 60:
                counts["green"] += 1
            elif b > 150 and r < 60 and g < 60:
                counts["blue"] += 1
        return counts

    seen, control = gear_pixels(image), gear_pixels(empty)
    # The empty desktop has a few such pixels (the panel's icons, a selection): the gears bring many times more.
    assert all(seen[c] > 200 and seen[c] > 5 * control[c] for c in seen), (seen, control)
    assert all(control[c] < 200 for c in control), control
    hub.stop_server("dv-gus")


def test_desktop_files_dropped_on_the_page_land_in_the_home_and_replace_nothing(hub, page):
    hub.spawn("dv-dora")
    container = hub.container("dv-dora")
    open_desktop(page, hub, "dv-dora", drawn=False)

    def drop(name: str, size: int) -> str:
        """Drop a file of ``size`` bytes (a repeating pattern) on the desktop, as a file manager would."""
        data = page.evaluate_handle(
            """([name, size]) => {
                 const bytes = new Uint8Array(size);
                 for (let i = 0; i < size; i++) bytes[i] = i % 251;
                 const dt = new DataTransfer(); dt.items.add(new File([bytes], name)); return dt; }""",
            [name, size],
        )
        page.evaluate("delete document.getElementById('devdock-banner').dataset.uploaded")
        page.locator("#screen").dispatch_event("drop", {"dataTransfer": data})
        page.wait_for_function("document.getElementById('devdock-banner').dataset.uploaded", timeout=60_000)
        return page.evaluate("document.getElementById('devdock-banner').dataset.uploaded")

    expected = "import hashlib; print(hashlib.sha256(bytes(i % 251 for i in range({}))).hexdigest())"
    home = "/home/dv-dora"
    for name, size, landed in (("notes.txt", 1000, "notes.txt"), ("notes.txt", 2000, "notes (1).txt"),
                               ("big.bin", 9 * 1024 * 1024 + 17, "big.bin")):  # fmt: skip
        assert drop(name, size) == landed
        digest = container.exec_run(["sha256sum", f"{home}/{landed}"]).output.decode().split()[0]
        assert digest == container.exec_run(["python3", "-c", expected.format(size)]).output.decode().strip(), landed
    # the first notes.txt is as it was (1000 bytes): nothing was replaced
    assert container.exec_run(["stat", "-c", "%s %U", f"{home}/notes.txt"]).output.decode().split() == [
        "1000",
        "dv-dora",
    ]
    assert "Uploaded to your home: ~/big.bin" in page.locator("#devdock-banner").inner_text()
    hub.stop_server("dv-dora")
