"""devdock's desktop viewer in Chromium through the real hub and proxy: it reconnects by itself after the proxy
restarts (no reload), says so when the server is gone, shares the clipboard both ways through the browser's
Clipboard API, makes the session follow the window's size, and the session runs on with no tab open."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.e2e.desktop import SHOTS, login, wait_for_desktop_frame
from tests.harness import Hub

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def hub(docker_client, tmp_path_factory):
    # The hub looks after its proxy every 2 s (JupyterHub restarts a proxy that died, and puts the routes back).
    hub = Hub(
        docker_client,
        tmp_path_factory.mktemp("viewer"),
        extra_config="c.ConfigurableHTTPProxy.check_running_interval = 2\n",
    )
    hub.start()
    yield hub
    hub.stop()


def _open_desktop(page, hub, user: str, drawn: bool = True):
    login(page, hub, user)
    page.wait_for_url(f"**/user/{user}/**", timeout=180_000)
    page.goto(f"{hub.url}/user/{user}/desktop/")
    page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    return wait_for_desktop_frame(page.locator("#screen canvas")) if drawn else None


def _as_user(container, script: str) -> str:
    """``script`` as the user on the desktop's display (:1, the session jupyter-remote-desktop-proxy started)."""
    display = container.exec_run(["sh", "-c", "ls /tmp/.X11-unix | head -n 1"], user="1000").output.decode().strip()
    env = {"DISPLAY": ":" + display.lstrip("X"), "HOME": f"/home/{container.labels['io.devdock.owner']}"}
    return container.exec_run(["bash", "-c", script], user="1000", environment=env).output.decode(errors="replace")


def _proxy_pid(hub) -> int:
    out = subprocess.run(["pgrep", "-f", f"configurable-http-proxy.*--api-port {hub.proxy_api_port}"],
                         capture_output=True, text=True)  # fmt: skip
    pids = [int(p) for p in out.stdout.split()]
    assert pids, "the hub's configurable-http-proxy is not running"
    return pids[0]


def test_desktop_reconnects_by_itself_after_a_proxy_restart_without_a_reload(hub, page):
    hub.spawn("dv-rho")
    _open_desktop(page, hub, "dv-rho")
    container = hub.container("dv-rho")
    _as_user(container, "(xfce4-terminal --title devdock-still-here >/dev/null 2>&1 &) ; sleep 2")
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
    assert "devdock-still-here" in _as_user(container, "xwininfo -root -tree")
    page.screenshot(path=SHOTS / "desktop-reconnected.png")


def test_desktop_says_the_server_is_gone_and_links_to_the_hub(hub, page):
    hub.ensure_running("dv-rho")
    _open_desktop(page, hub, "dv-rho")
    hub.stop_server("dv-rho")
    page.wait_for_function("document.body.dataset.state === 'gone'", timeout=60_000)
    banner = page.locator("#devdock-banner")
    assert "Your server has stopped" in banner.inner_text()
    assert banner.locator("a").get_attribute("href").endswith("/hub/home")
    page.screenshot(path=SHOTS / "desktop-server-gone.png")


def test_desktop_clipboard_both_ways_through_the_clipboard_api(hub, browser):
    hub.spawn("dv-cleo")
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
    page = context.new_page()
    try:
        _open_desktop(page, hub, "dv-cleo")
        container = hub.container("dv-cleo")
        assert "shared with this computer" in page.locator("#clipboard-mode").inner_text()
        # Copied on the desktop: the page's clipboard (this computer's) has it, without the popover.
        _as_user(container, "printf 'copied on the desktop: 你好 ✓' | xclip -selection clipboard")
        page.wait_for_function(
            "navigator.clipboard.readText().then(t => window.devdockSeen = t); window.devdockSeen === "
            "'copied on the desktop: 你好 ✓'",
            timeout=30_000,
        )
        assert page.locator("#clipboard-container").is_hidden()
        # Copied on this computer: back on the desktop, it pastes there.
        page.evaluate("navigator.clipboard.writeText('copied in the browser')")
        page.locator("#screen canvas").click()
        deadline = time.monotonic() + 30
        while _as_user(container, "xclip -o -selection clipboard") != "copied in the browser":
            assert time.monotonic() < deadline, _as_user(container, "xclip -o -selection clipboard")
            time.sleep(0.5)
            page.locator("#screen canvas").click()
    finally:
        context.close()
    hub.stop_server("dv-cleo")


def _screen_size(container) -> tuple[int, int]:
    out = _as_user(container, "xdpyinfo | grep dimensions")
    width, height = out.split("dimensions:")[1].split()[0].split("x")
    return int(width), int(height)


def test_desktop_size_follows_the_window_and_the_session_runs_on_without_a_tab(hub, browser):
    hub.spawn("dv-sam")
    container = hub.container("dv-sam")
    context = browser.new_context(viewport={"width": 1200, "height": 760})
    page = context.new_page()
    _open_desktop(page, hub, "dv-sam")

    def fits() -> bool:
        box = page.locator("#screen").bounding_box()
        return _screen_size(container) == (int(box["width"]), int(box["height"]))

    deadline = time.monotonic() + 30
    while not fits():
        assert time.monotonic() < deadline, (_screen_size(container), page.locator("#screen").bounding_box())
        time.sleep(0.5)
    page.set_viewport_size({"width": 1000, "height": 640})
    deadline = time.monotonic() + 30
    while not fits():
        assert time.monotonic() < deadline, (_screen_size(container), page.locator("#screen").bounding_box())
        time.sleep(0.5)
    assert _screen_size(container)[0] == 1000
    # No tab open: the session and its windows keep running; the next tab finds them.
    _as_user(container, "(xfce4-terminal --title devdock-no-tab >/dev/null 2>&1 &) ; sleep 2")
    context.close()
    time.sleep(5)
    assert "devdock-no-tab" in _as_user(container, "xwininfo -root -tree")
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    _open_desktop(page, hub, "dv-sam", drawn=False)  # a dark terminal fills much of it: not the empty desktop
    assert "devdock-no-tab" in _as_user(container, "xwininfo -root -tree")
    page.wait_for_timeout(2000)
    page.screenshot(path=SHOTS / "desktop-after-no-tab.png")
    context.close()
    hub.stop_server("dv-sam")


def test_desktop_firefox_starts_without_first_run_pages_or_phoning_home(hub, page):
    hub.spawn("dv-fox")
    container = hub.container("dv-fox")
    # The panel's web browser launcher (XFCE's debian-sensible-browser helper) is Firefox ESR.
    browser_path = _as_user(container, "readlink -f /etc/alternatives/x-www-browser").strip()
    assert browser_path.endswith("firefox-esr"), browser_path
    log = "/tmp/firefox-dns.log"
    # Every host name Firefox looks up goes to its log (MOZ_LOG's resolver module).
    _as_user(container, f"(MOZ_LOG=nsHostResolver:5 MOZ_LOG_FILE={log} firefox-esr >/dev/null 2>&1 &); true")
    deadline = time.monotonic() + 90
    while "Mozilla Firefox" not in _as_user(container, "xwininfo -root -tree | grep -i firefox"):
        assert time.monotonic() < deadline, _as_user(container, "xwininfo -root -tree")
        time.sleep(1)
    time.sleep(15)  # what a start would fetch (first-run pages, telemetry, updates, safe browsing) starts by now
    lookups = _as_user(container, f"cat {log}* 2>/dev/null | grep -o 'Resolving host \\[[^]]*\\]' | sort -u")
    assert lookups.strip() == "", lookups
    titles = _as_user(container, "xwininfo -root -tree | grep -i firefox")
    assert "Welcome" not in titles and "Privacy" not in titles, titles
    _open_desktop(page, hub, "dv-fox", drawn=False)
    page.wait_for_timeout(3000)
    page.screenshot(path=SHOTS / "desktop-firefox.png")
    # The control: a page the user opens is looked up (the log works).
    _as_user(container, "firefox-esr --new-tab http://devdock-control.invalid/ >/dev/null 2>&1; true")
    deadline = time.monotonic() + 30
    while "devdock-control.invalid" not in _as_user(container, f"cat {log}* 2>/dev/null"):
        assert time.monotonic() < deadline, "Firefox's resolver log stayed empty"
        time.sleep(1)
    hub.stop_server("dv-fox")


def test_desktop_opengl_and_fonts_of_every_script_seen_in_chromium(hub, page):
    """What a person sees: glxgears drawing (Mesa's software renderer here) and a terminal with CJK, Devanagari and
    emoji text, in the desktop as Chromium shows it."""
    hub.spawn("dv-gus")
    container = hub.container("dv-gus")
    before = _open_desktop(page, hub, "dv-gus")
    text = "你好 こんにちは 안녕하세요 नमस्ते 😀"
    terminal = f"xfce4-terminal --geometry=60x8+40+60 --title fonts -x sh -c 'echo \"{text}\"; sleep 600'"
    _as_user(container, f"({terminal} >/dev/null 2>&1 &); (glxgears -geometry 300x300+700+120 >/dev/null 2>&1 &)")
    time.sleep(4)
    windows = _as_user(container, "xwininfo -root -tree")
    assert '"fonts"' in windows and '"glxgears"' in windows, windows
    page.wait_for_timeout(2000)
    shot = page.locator("#screen canvas").screenshot()
    (SHOTS / "desktop-gl-fonts.png").write_bytes(shot)
    image = Image.open(io.BytesIO(shot)).convert("RGB")
    # glxgears draws a red, a green and a blue gear: strongly coloured pixels the empty desktop does not have.
    empty = Image.open(io.BytesIO(before)).convert("RGB")

    def gear_pixels(img) -> dict[str, int]:
        counts = {"red": 0, "green": 0, "blue": 0}
        for r, g, b in img.getdata():
            if r > 150 and g < 60 and b < 60:
                counts["red"] += 1
            elif g > 150 and r < 60 and b < 60:
                counts["green"] += 1
            elif b > 150 and r < 60 and g < 60:
                counts["blue"] += 1
        return counts

    seen, control = gear_pixels(image), gear_pixels(empty)
    assert all(seen[c] > 200 for c in seen), seen
    assert all(control[c] < 50 for c in control), control
    hub.stop_server("dv-gus")


def test_desktop_files_dropped_on_the_page_land_in_the_home_and_replace_nothing(hub, page):
    hub.spawn("dv-dora")
    container = hub.container("dv-dora")
    _open_desktop(page, hub, "dv-dora", drawn=False)

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


@pytest.fixture(scope="module")
def public_hub(docker_client, tmp_path_factory):
    """A hub whose public address the servers can reach (the devdock network's gateway), as on a real host."""
    folder = tmp_path_factory.mktemp("public")
    gateway = Hub(docker_client, folder / "probe").gateway  # made, never started: it sets the network up
    hub = Hub(docker_client, folder / "hub", host=gateway)
    hub.start()
    yield hub
    hub.stop()


def test_desktop_firefox_opens_jupyterlab_and_a_web_app_through_the_hub(public_hub, page):
    hub = public_hub
    hub.spawn("dv-finn")
    container = hub.container("dv-finn")
    with open(Path(__file__).parent / "firefox_bidi.py", "rb") as f:
        script = f.read()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("firefox_bidi.py")
        info.size, info.mode = len(script), 0o644
        tar.addfile(info, io.BytesIO(script))
    container.put_archive("/usr/local/share", archive.getvalue())  # the container's own layer (/tmp is a tmpfs)
    # A web app in the server on port 6006, as TensorBoard serves one; and Firefox on the desktop, driven over
    # its own remote protocol (WebDriver BiDi) from inside the container.
    _as_user(container, "mkdir -p /tmp/app && echo 'TensorBoard stand-in: scalars' > /tmp/app/index.html && "
                        "(python3 -m http.server 6006 --bind 127.0.0.1 --directory /tmp/app >/dev/null 2>&1 &) && "
                        "(firefox-esr --remote-debugging-port 9222 about:blank >/tmp/firefox.out 2>&1 &)")  # fmt: skip
    out = container.exec_run(
        ["/opt/devdock/venv/bin/python", "/usr/local/share/firefox_bidi.py", hub.url, "dv-finn", hub.password,
         "/user/dv-finn/proxy/6006/"],
        user="1000",
    )  # fmt: skip
    assert out.exit_code == 0, out.output.decode()[-2000:]
    seen = json.loads(out.output.decode().strip().splitlines()[-1])
    assert "JupyterLab" in seen["lab_title"] and seen["lab_url"].startswith(f"{hub.url}/user/dv-finn/lab"), seen
    assert seen["app_text"] == "TensorBoard stand-in: scalars", seen
    _open_desktop(page, hub, "dv-finn", drawn=False)
    page.wait_for_timeout(3000)
    page.screenshot(path=SHOTS / "desktop-firefox-lab.png")
    hub.stop_server("dv-finn")
