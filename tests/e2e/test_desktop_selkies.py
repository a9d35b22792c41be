"""Selkies, the second way into the same desktop, in Chromium through the real hub and proxy: it shows the session
noVNC shows (a window opened through one is seen in the other), pointer and keyboard reach an application, the
clipboard goes both ways (text and images), an upload lands in the home, a tone played in the desktop is heard in
the page, the hub's home page links both views (a profile's default first), and a profile can switch Selkies off."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import datetime
from io import BytesIO

import pytest
import requests
from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.e2e.desktop import (
    SHOTS,
    as_user,
    desktop_drawn,
    frame_stats,
    login,
    screen_size,
    until_on_the_desktops_clipboard,
    wait_for_desktop_frame,
)

PROFILES = """
c.DevDockSpawner.profile_list = [
    {"slug": "desktop", "display_name": "Desktop", "default": True},
    {"slug": "fast", "display_name": "Fast desktop", "overrides": {"desktop_default_view": "selkies"}},
    {"slug": "plain", "display_name": "noVNC only", "overrides": {"desktop_selkies": False}},
]
"""
SIZE = {"width": 1680, "height": 1050}  # the session's own size: neither view resizes it under the other

# Every AudioContext's output also goes through an analyser, whose level the test reads (the Web Audio API's own
# measure of what the page plays).
AUDIO_PROBE = """
(() => {
  const connect = AudioNode.prototype.connect;
  window.devdockAnalysers = [];
  AudioNode.prototype.connect = function (target, ...rest) {
    if (target instanceof AudioDestinationNode) {
      const ctx = target.context;
      if (!ctx.devdockAnalyser) {
        ctx.devdockAnalyser = ctx.createAnalyser();
        ctx.devdockAnalyser.fftSize = 4096;
        window.devdockAnalysers.push(ctx.devdockAnalyser);
      }
      connect.call(this, ctx.devdockAnalyser);
    }
    return connect.call(this, target, ...rest);
  };
  window.devdockAudioLevel = () => Math.max(0, ...window.devdockAnalysers.map(a => {
    const d = new Float32Array(a.fftSize); a.getFloatTimeDomainData(d);
    return Math.sqrt(d.reduce((s, x) => s + x * x, 0) / d.length);
  }));
})();
"""


@pytest.fixture(scope="module")
def hub(make_hub):
    return make_hub("selkies", extra_config=PROFILES)


@pytest.fixture(scope="module")
def ann(hub):
    """ann's server (the fast profile: Selkies first) and a browser context logged in as her."""
    hub.spawn("sk-ann", options={"profile": "fast"})
    return hub.container("sk-ann")


@pytest.fixture
def context(browser, hub, ann):
    context = browser.new_context(viewport=SIZE)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=hub.url)
    context.add_init_script(AUDIO_PROBE)
    page = context.new_page()
    login(page, hub, "sk-ann")
    page.wait_for_url("**/user/sk-ann/**", timeout=180_000)
    # Each test starts from an empty browser clipboard (one browser's, shared by its contexts): Selkies sends what
    # it holds to the desktop as the page opens, which would race what a test copies on the desktop.
    page.evaluate("navigator.clipboard.writeText('')")
    yield context
    context.close()


def open_selkies(context, hub, user: str = "sk-ann"):
    """The Selkies page, once its stream shows the drawn desktop."""
    page = context.new_page()
    page.goto(f"{hub.url}/user/{user}/selkies/")
    try:
        page.wait_for_function(
            "(() => { const v = document.getElementById('videoStream'); return v && v.videoWidth > 0; })()",
            timeout=90_000,
        )
    except PlaywrightTimeout:
        container = hub.container(user)
        log = container.exec_run(["tail", "-n", "60", f"/home/{user}/.cache/devdock/selkies.log"], user="1000")
        raise AssertionError(f"Selkies' stream did not start in 90 s; its log ends:\n{log.output.decode()}") from None
    wait_for_frame(page, desktop_drawn)
    return page


def wait_for_frame(page, ok, timeout: float = 60, name: str = "selkies-frame") -> bytes:
    """Screenshots of Selkies' video until ``ok(png)``."""
    deadline = time.monotonic() + timeout
    while True:
        png = page.locator("#videoStream").screenshot()
        if ok(png):
            return png
        if time.monotonic() > deadline:
            (SHOTS / f"{name}-not-seen.png").write_bytes(png)
            raise AssertionError(f"{name}: not seen in Selkies' stream after {timeout}s: {frame_stats(png)}")
        time.sleep(0.5)


def magenta_pixels(png: bytes) -> int:
    image = Image.open(BytesIO(png)).convert("RGB")
    return sum(1 for r, g, b in getattr(image, "get_flattened_data", image.getdata)() if r > 200 and g < 70 and b > 200)


def in_home(container, name: str) -> str:
    return container.exec_run(["cat", f"/home/sk-ann/{name}"], user="1000").output.decode(errors="replace")


def wait_in_home(container, name: str, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in in_home(container, name):
        assert time.monotonic() < deadline, (name, in_home(container, name))
        time.sleep(0.5)


def test_selkies_shows_the_same_desktop_as_novnc_and_pointer_and_keyboard_reach_an_application(hub, context, ann):
    # Two terminals: a shell on the left, and on the right a focused one that writes what it is sent to a file.
    as_user(
        ann,
        "(xfce4-terminal --geometry=60x12+100+150 --title=left-shell >/dev/null 2>&1 &); sleep 2; "
        "(xfce4-terminal --geometry=60x12+900+150 --title=right-cat -x sh -c 'cat > ~/right.txt' >/dev/null 2>&1 &);"
        " sleep 3",
    )
    windows = as_user(ann, "xwininfo -root -tree")
    assert '"left-shell"' in windows and '"right-cat"' in windows, windows
    novnc = context.new_page()
    novnc.goto(f"{hub.url}/user/sk-ann/desktop/")
    novnc.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
    novnc_canvas = novnc.locator("#screen canvas")
    wait_for_desktop_frame(novnc_canvas)
    assert magenta_pixels(novnc_canvas.screenshot()) < 100  # control: nothing magenta on the desktop yet

    selkies = open_selkies(context, hub)
    assert magenta_pixels(selkies.locator("#videoStream").screenshot()) < 100
    # The pointer: a click on the left terminal (scaled from the session's pixels to the video's) gives it the
    # keyboard; the keyboard: a command typed there opens a magenta window in the session.
    width, height = screen_size(ann)
    box = selkies.locator("#videoStream").bounding_box()
    # On a loaded machine the first input after the page connects can be lost before Selkies' input is ready: up to
    # three tries, each a click and the line typed again from empty (Ctrl+U).
    for _ in range(3):
        selkies.mouse.click(box["x"] + 300 * box["width"] / width, box["y"] + 230 * box["height"] / height)
        selkies.wait_for_timeout(1500)  # the click's way to the window manager
        selkies.keyboard.press("Control+u")
        selkies.keyboard.type("xfce4-terminal --geometry=40x10+500+500 --color-bg=#ff00ff --title=typed-in-selkies &")
        selkies.keyboard.press("Enter")
        deadline = time.monotonic() + 20
        while '"typed-in-selkies"' not in as_user(ann, "xwininfo -root -tree") and time.monotonic() < deadline:
            time.sleep(0.5)
        if '"typed-in-selkies"' in as_user(ann, "xwininfo -root -tree"):
            break
    else:
        raise AssertionError(("the typed command opened no window in three tries", in_home(ann, "right.txt")))
    assert "xfce4-terminal" not in in_home(ann, "right.txt")  # the keys went where the click put them
    shown = wait_for_frame(selkies, lambda png: magenta_pixels(png) > 5000, name="selkies-typed-window")
    (SHOTS / "selkies-typed-window.png").write_bytes(shown)
    # noVNC shows that same window: one session, two ways in.
    deadline = time.monotonic() + 30
    while magenta_pixels(novnc_canvas.screenshot()) <= 5000:
        assert time.monotonic() < deadline, "noVNC does not show the window opened through Selkies"
        time.sleep(0.5)
    novnc.screenshot(path=SHOTS / "selkies-window-in-novnc.png")
    # The encoder was chosen by itself and said so: no GPU here, so no NVENC, and x264 in software.
    log = in_home(ann, ".cache/devdock/selkies.log")
    assert "No hardware encoder" in log and "nvenc" in log, log
    assert "Encoder: software H264 (x264)" in log, log
    as_user(ann, "pkill -f typed-in-selkies; pkill -f left-shell; pkill -f right-cat")


def until_on_the_desktop(page, container, done, timeout: float) -> None:
    """Until what the browser copied is on the desktop's clipboard: Selkies sends it once the page has the focus
    again, so each try gives it the focus and clicks the stream (its overlay takes the pointer, as a person's click)."""

    def nudge():
        page.evaluate("window.dispatchEvent(new Event('focus'))")
        page.mouse.click(800, 600)

    until_on_the_desktops_clipboard(container, done, nudge, timeout)


def test_selkies_clipboard_both_ways(hub, context, ann):
    page = open_selkies(context, hub)
    # Copied on the desktop: the browser's clipboard has it.
    as_user(ann, "printf 'copied on the desktop: 你好 ✓' | xclip -selection clipboard")
    page.wait_for_function(
        "navigator.clipboard.readText().then(t => window.devdockSeen = t); window.devdockSeen === "
        "'copied on the desktop: 你好 ✓'",
        timeout=30_000,
    )
    # Copied in the browser: the desktop's clipboard has it once the page has the focus again.
    page.evaluate("navigator.clipboard.writeText('copied in the browser')")
    until_on_the_desktop(
        page, ann, lambda: as_user(ann, "xclip -o -selection clipboard") == "copied in the browser", 30
    )


# The browser's clipboard image, if any: its size and the colours at its left and right quarter (drawn on a canvas).
READ_CLIPBOARD_IMAGE = """
(async () => {
  for (const item of await navigator.clipboard.read()) {
    if (!item.types.includes('image/png')) continue;
    const bitmap = await createImageBitmap(await item.getType('image/png'));
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d');
    ctx.drawImage(bitmap, 0, 0);
    const at = x => Array.from(ctx.getImageData(x, bitmap.height >> 1, 1, 1).data.slice(0, 3));
    return [bitmap.width, bitmap.height, at(bitmap.width >> 2), at((bitmap.width * 3) >> 2)];
  }
  return null;
})()
"""


def two_colour_png(width: int, height: int, left: tuple, right: tuple) -> bytes:
    image = Image.new("RGB", (width, height), left)
    image.paste(right, (width // 2, 0, width, height))
    out = BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def near(colour, expected) -> bool:
    return all(abs(a - b) <= 8 for a, b in zip(colour, expected, strict=True))


def test_selkies_clipboard_an_image_both_ways(hub, context, ann):
    page = open_selkies(context, hub)
    # The control: before the desktop copies an image, the browser's clipboard holds none.
    assert page.evaluate(READ_CLIPBOARD_IMAGE) is None
    # An image copied on the desktop (as an image viewer or a screenshot tool offers it): the browser has it.
    png = two_colour_png(96, 40, (255, 0, 255), (0, 160, 0))
    as_user(ann, f"echo {base64.b64encode(png).decode()} | base64 -d | xclip -selection clipboard -t image/png")
    deadline = time.monotonic() + 60
    while (seen := page.evaluate(READ_CLIPBOARD_IMAGE)) is None:
        assert time.monotonic() < deadline, as_user(ann, "xclip -o -selection clipboard -t TARGETS")
        time.sleep(0.5)
    width, height, left, right = seen
    assert (width, height) == (96, 40) and near(left, (255, 0, 255)) and near(right, (0, 160, 0)), seen
    # An image copied in the browser: the desktop's clipboard offers it as a PNG of the same picture.
    page.evaluate(
        """(async () => {
          const canvas = new OffscreenCanvas(64, 30), ctx = canvas.getContext('2d');
          ctx.fillStyle = 'rgb(0, 0, 255)'; ctx.fillRect(0, 0, 32, 30);
          ctx.fillStyle = 'rgb(255, 200, 0)'; ctx.fillRect(32, 0, 32, 30);
          const blob = await canvas.convertToBlob({type: 'image/png'});
          await navigator.clipboard.write([new ClipboardItem({'image/png': blob})]);
        })()"""
    )

    def desktop_image():
        out = as_user(ann, "xclip -o -selection clipboard -t image/png 2>/dev/null | base64 -w0")
        try:
            return Image.open(BytesIO(base64.b64decode(out))).convert("RGB")
        except OSError:
            return None  # not an image (yet): the magenta and green one is gone, the new one not there

    until_on_the_desktop(page, ann, lambda: (image := desktop_image()) is not None and image.size == (64, 30), 60)
    image = desktop_image()
    assert near(image.getpixel((16, 15)), (0, 0, 255)) and near(image.getpixel((48, 15)), (255, 200, 0))


def test_selkies_upload_lands_in_the_home(hub, context, ann):
    page = open_selkies(context, hub)
    data = bytes(i % 251 for i in range(300_000))
    page.set_input_files("#globalFileInput", files=[{"name": "uploaded.bin", "mimeType": "application/x-test",
                                                      "buffer": data}])  # fmt: skip
    deadline = time.monotonic() + 60
    expected = f"{len(data)} sk-ann"
    while ann.exec_run(["stat", "-c", "%s %U", "/home/sk-ann/uploaded.bin"]).output.decode().strip() != expected:
        assert time.monotonic() < deadline, ann.exec_run(["ls", "-la", "/home/sk-ann"]).output.decode()
        time.sleep(0.5)
    digest = ann.exec_run(["sha256sum", "/home/sk-ann/uploaded.bin"]).output.decode().split()[0]
    assert digest == hashlib.sha256(data).hexdigest()


def test_selkies_audio_a_tone_played_in_the_desktop_is_heard_in_the_page(hub, context, ann):
    page = open_selkies(context, hub)
    page.mouse.click(800, 600)  # a user gesture: the page may play sound
    page.evaluate("window.devdockAnalysers.forEach(a => a.context.resume())")
    page.wait_for_function("window.devdockAnalysers.length > 0", timeout=30_000)
    quiet = max(page.evaluate("window.devdockAudioLevel()") for _ in range(5))
    # A 440 Hz tone, 8 s, into the session's sound server, as a desktop application plays it.
    tone = (
        "import math, struct, sys; rate = 48000; sys.stdout.buffer.write(b''.join("
        "struct.pack('<hh', v, v) for v in (int(9000 * math.sin(2 * math.pi * 440 * i / rate)) "
        "for i in range(rate * 8))))"
    )
    as_user(
        ann,
        "export XDG_RUNTIME_DIR=$(ls -d /tmp/devdock-runtime.* | head -n 1); "
        f'(python3 -c "{tone}" | pacat --rate=48000 --channels=2 --format=s16le >/dev/null 2>&1 &)',
    )
    deadline = time.monotonic() + 20
    level = 0.0
    while level < 0.02:
        assert time.monotonic() < deadline, f"the page's audio stayed at {level:.4f} (quiet: {quiet:.4f})"
        time.sleep(0.3)
        level = page.evaluate("window.devdockAudioLevel()")
    assert quiet < 0.005, quiet  # control: silence before the tone


def test_selkies_home_page_links_both_views_the_profiles_default_first_and_a_profile_switches_it_off(hub, page, ann):
    """Also what noVNC's page says of sound: open Selkies for it where the server has it, none where it has not."""
    login(page, hub, "sk-ann")
    page.wait_for_url("**/user/sk-ann/**", timeout=60_000)
    page.goto(f"{hub.url}/hub/home")
    links = page.locator(".devdock-desktop-links a")
    assert links.count() == 2
    assert links.nth(0).inner_text().startswith("Desktop (Selkies")  # the fast profile's default view
    assert links.nth(0).get_attribute("href").endswith("/user/sk-ann/selkies/")
    assert links.nth(1).get_attribute("href").endswith("/user/sk-ann/desktop/")
    # JupyterLab's launcher lists it too (jupyter-server-proxy's launcher entries).
    token = hub.token("sk-ann")
    info = requests.get(hub.server_url("sk-ann") + "server-proxy/servers-info", timeout=30,
                        headers={"Authorization": f"token {token}"}).json()  # fmt: skip
    selkies = [s for s in info["server_processes"] if s["name"] == "selkies"]
    assert selkies and selkies[0]["launcher_entry"]["enabled"], info
    novnc = requests.get(hub.server_url("sk-ann") + "desktop/", headers={"Authorization": f"token {token}"}, timeout=30)
    assert 'id="audio-note" href="/user/sk-ann/selkies/"' in novnc.text and "Sound: open in Selkies" in novnc.text

    # The plain profile: no Selkies at all (no route, no link), noVNC as before.
    hub.spawn("sk-bea", options={"profile": "plain"})
    bea = hub.token("sk-bea")
    headers = {"Authorization": f"token {bea}"}
    assert requests.get(hub.server_url("sk-bea") + "selkies/", headers=headers, timeout=30).status_code == 404
    novnc = requests.get(hub.server_url("sk-bea") + "desktop/", headers=headers, timeout=30)
    assert novnc.status_code == 200 and "No sound in this view" in novnc.text and "selkies/" not in novnc.text
    page.context.clear_cookies()
    login(page, hub, "sk-bea")
    page.wait_for_url("**/user/sk-bea/**", timeout=60_000)
    page.goto(f"{hub.url}/hub/home")
    links = page.locator(".devdock-desktop-links a")
    assert links.count() == 1 and links.nth(0).get_attribute("href").endswith("/user/sk-bea/desktop/")
    hub.stop_server("sk-bea")


def _desktop_input_at(hub, user: str) -> datetime:
    """When the desktop last had keyboard or pointer input, as the server's activity sources say (devdock_ext)."""
    headers = {"Authorization": f"token {hub.token(user)}"}
    status = requests.get(hub.server_url(user) + "api/devdock/status", headers=headers, timeout=30).json()
    return datetime.fromisoformat(status["sources"]["desktop input"])


def test_selkies_stream_is_not_activity_but_input_through_it_is(hub, context, ann):
    page = open_selkies(context, hub)
    page.wait_for_timeout(3000)  # the server's activity check runs every 2 s here
    before = _desktop_input_at(hub, "sk-ann")
    page.wait_for_timeout(8000)  # the stream runs (frames, audio, its websocket): nobody touches anything
    still = _desktop_input_at(hub, "sk-ann")
    assert abs((still - before).total_seconds()) < 1, (before, still)
    page.keyboard.press("Shift")
    page.mouse.move(700, 500)
    deadline = time.monotonic() + 20
    while (_desktop_input_at(hub, "sk-ann") - still).total_seconds() < 8:
        assert time.monotonic() < deadline, "input through Selkies did not count as desktop activity"
        time.sleep(1)
