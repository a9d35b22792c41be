"""The desktop's two views side by side: noVNC and Selkies into the same 1920x1080 desktop, in Chromium through the hub.

    .venv/bin/python benchmarks/stream.py [--seconds 15] [--keys 20] [--rounds 2]

One devdock server; in its desktop a terminal scrolls without end (the same moving workload for both views) and a
second one waits for typing. Each round opens each view in turn (the order alternates between rounds) in Debian's
Chromium, logged in on the hub, and measures, over the same window of time:

- **frames shown per second**: distinct pictures of the scrolling terminal's region the page shows, sampled on each
  of the browser's animation frames for noVNC's canvas and on each frame the browser presents for Selkies' video
  (``requestVideoFrameCallback``), the same sampler on both;
- **key to glyph**: a key press (the browser's keydown) until the typed character is on the page, the scrolling
  paused, median and p90 of ``--keys`` presses;
- **bytes per second** the container sends (its network interface, in the engine's stats: the stream and the rest);
- **CPU seconds per second** in the container (the engine's stats: the workload, the X server, the view's server).

A "no view" row gives the workload's own CPU. Printed: a table and Selkies' ratio to noVNC.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

from common import harness, machine, median, table

from tests.e2e.desktop import as_user, login

WIDTH, HEIGHT = 1920, 1080
SCROLL = (120, 140, 480, 360)  # x, y, w, h inside the scrolling terminal (placed at +100+100)
TYPED = (1010, 130, 560, 150)  # inside the typing terminal (placed at +1000+100)

# Distinct frames of a region of the view's picture, and the time from a key press until that region changes.
METER = """
(() => {
  const view = () => document.querySelector(window.devdockView);
  const probe = document.createElement('canvas');
  const g = probe.getContext('2d', {willReadFrequently: true});
  const sample = ([x, y, w, h]) => {
    probe.width = w; probe.height = h;
    g.drawImage(view(), x, y, w, h, 0, 0, w, h);
    const d = g.getImageData(0, 0, w, h).data;
    let hash = 0;
    for (let i = 0; i < d.length; i += 28) hash = (hash * 31 + d[i] + 3 * d[i + 1] + 7 * d[i + 2]) | 0;
    return hash;
  };
  window.devdockMeter = {
    frames: 0, running: false, latency: null,
    count(region) {
      this.frames = 0; this.running = true;
      let last = sample(region);
      // A video's frames are counted as the browser presents them, a canvas's on each animation frame.
      const element = view();
      const next = element.requestVideoFrameCallback ? (f) => element.requestVideoFrameCallback(f)
                                                    : (f) => requestAnimationFrame(f);
      const tick = () => {
        if (!this.running) return;
        const now = sample(region);
        if (now !== last) { this.frames += 1; last = now; }
        next(tick);
      };
      next(tick);
    },
    stop() { this.running = false; return this.frames; },
    armKey(region) {
      this.latency = null;
      const before = sample(region);
      window.addEventListener('keydown', (event) => {
        const t0 = performance.now();
        const tick = () => {
          if (sample(region) !== before) { this.latency = performance.now() - t0; return; }
          if (performance.now() - t0 > 3000) { this.latency = -1; return; }
          requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
      }, {once: true, capture: true});
    },
  };
})();
"""


def counters(container) -> tuple[float, int, int]:
    """(wall time, CPU nanoseconds the container has used, bytes its network interfaces sent): the engine's stats."""
    stats = container.stats(stream=False, one_shot=True)
    sent = sum(n.get("tx_bytes", 0) for n in (stats.get("networks") or {}).values())
    return time.monotonic(), stats["cpu_stats"]["cpu_usage"]["total_usage"], sent


#: The processes that serve each view: Selkies (capture and encoding), TigerVNC's X server (its VNC encoder is in
#: it; it also draws the desktop for both views) and the single-user server (jupyter-server-proxy's relay).
SERVERS = {"Selkies": "^/opt/devdock/selkies/bin/python", "Xtigervnc": "^/usr/bin/Xtigervnc", "relay": "singleuser"}


def process_cpu(container) -> dict[str, float]:
    """CPU seconds used so far by each of SERVERS' processes (from /proc/PID/stat, in clock ticks)."""
    script = "; ".join(
        f"echo {name} $(for p in $(pgrep -f '{pattern}'); do awk '{{print $14 + $15}}' /proc/$p/stat; done)"
        for name, pattern in SERVERS.items()
    )
    out = container.exec_run(["sh", "-c", script]).output.decode().splitlines()
    ticks = 100  # USER_HZ
    return {line.split()[0]: sum(int(x) for x in line.split()[1:]) / ticks for line in out if line.strip()}


def open_view(context, hub, user: str, view: str, bar: int, encoder: str):
    """The view's page, its picture shown 1:1 (noVNC's viewer sizes the session to its screen area, under its bar)."""
    page = context.new_page()
    if view == "noVNC":
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT + bar})
        page.goto(f"{hub.url}/user/{user}/desktop/")
        page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
        selector = "#screen canvas"
    else:
        page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
        page.goto(f"{hub.url}/user/{user}/selkies/")
        # H.264 plays in its <video>, JPEG stripes are drawn on its canvas.
        shown = "videoStream" if encoder != "jpeg" else "videoCanvas"
        page.wait_for_function(
            f"""(() => {{ const e = document.getElementById('{shown}');
                return e && (e.videoWidth || e.width) > 0 && getComputedStyle(e).display !== 'none'; }})()""",
            timeout=90_000,
        )
        selector = f"#{shown}"
    page.evaluate(f"window.devdockView = {selector!r}")
    page.evaluate(METER)
    return page, page.locator(selector)


def click_at(page, element, x: int, y: int) -> None:
    # (Selkies' JPEG canvas may report no box: its picture fills the 1920x1080 page then.)
    box = element.bounding_box() or {"x": 0, "y": 0, "width": WIDTH, "height": HEIGHT}
    page.mouse.click(box["x"] + x * box["width"] / WIDTH, box["y"] + y * box["height"] / HEIGHT)


def measure(context, hub, user, view, bar, encoder, container, seconds: float, keys: int, scroller: str) -> dict:
    page, element = open_view(context, hub, user, view, bar, encoder)
    try:
        page.wait_for_timeout(3000)  # the view settles (first full frame, encoder ramp-up)
        t0, cpu0, sent0 = counters(container)
        procs0 = process_cpu(container)
        page.evaluate(f"window.devdockMeter.count({list(SCROLL)})")
        page.wait_for_timeout(seconds * 1000)
        frames = page.evaluate("window.devdockMeter.stop()")
        decoded = page.evaluate("window.fps || 0") if view == "Selkies" else float("nan")  # its client's own count
        procs1 = process_cpu(container)
        t1, cpu1, sent1 = counters(container)
        wall = t1 - t0
        # Key to glyph, with the scrolling paused: a still desktop but for the typed characters.
        container.exec_run(["pkill", "-STOP", "-f", f"^{scroller}"], user="1000")
        click_at(page, element, TYPED[0] + 200, TYPED[1] + 60)
        page.wait_for_timeout(1000)
        latencies = []
        for i in range(keys):
            page.evaluate(f"window.devdockMeter.armKey({list(TYPED)})")
            page.keyboard.press("abcdefghijklmnopqrstuvwxyz"[i % 26])
            page.wait_for_function("window.devdockMeter.latency !== null", timeout=10_000)
            latencies.append(page.evaluate("window.devdockMeter.latency"))
            page.wait_for_timeout(150)
        page.keyboard.press("Control+u")
        container.exec_run(["pkill", "-CONT", "-f", f"^{scroller}"], user="1000")
        shown = [x for x in latencies if x >= 0]
        return {
            "fps": frames / (seconds or 1),
            "decoded_fps": decoded,
            "latency_ms": median(shown),
            "latency_p90_ms": statistics.quantiles(shown, n=10)[-1] if len(shown) >= 2 else float("nan"),
            "missed": len(latencies) - len(shown),
            "bytes_per_s": (sent1 - sent0) / wall,
            "cpu": (cpu1 - cpu0) / 1e9 / wall,
            **{f"cpu_{name}": (procs1[name] - procs0[name]) / wall for name in SERVERS},
        }
    finally:
        page.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="length of each frame-rate window")
    parser.add_argument("--keys", type=int, default=20, help="key presses per latency measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--encoder", default="h264enc", help="Selkies' encoder (desktop_selkies_encoder)")
    args = parser.parse_args()

    client = harness.docker_client()
    harness.require_image(client)
    extra = f"c.DevDockSpawner.desktop_selkies_encoder = {args.encoder!r}\n"
    hub = harness.Hub(client, Path(tempfile.mkdtemp(prefix="devdock-stream-")), extra_config=extra)
    user = "streamer"
    results: dict[str, list[dict]] = {"noVNC": [], "Selkies": []}
    idle: list[dict] = []
    scroller = "devdock-bench-scroll"
    try:
        hub.start()
        hub.spawn(user)
        container = hub.container(user)
        with harness.chromium() as browser:
            context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
            page = context.new_page()
            login(page, hub, user)
            page.wait_for_url(f"**/user/{user}/**", timeout=180_000)
            # noVNC's bar: its viewer then sizes the session to 1920x1080 under it, and the session keeps that size.
            page.goto(f"{hub.url}/user/{user}/desktop/")
            page.wait_for_function("document.getElementById('status').textContent === 'Connected'", timeout=60_000)
            bar = math.ceil(page.locator("#screen").bounding_box()["y"])
            page.set_viewport_size({"width": WIDTH, "height": HEIGHT + bar})
            page.wait_for_timeout(3000)
            page.close()
            size = as_user(container, "xdpyinfo | grep dimensions").split()[1]
            print(f"desktop: {size}", flush=True)
            as_user(
                container,
                f"(xfce4-terminal --geometry=100x32+100+100 --title=scrolling -x bash -c "
                f"'exec -a {scroller} bash -c \"while :; do ls -la --color=always /usr/share /usr/lib; done\"' "
                ">/dev/null 2>&1 &); sleep 1; "
                "(xfce4-terminal --geometry=70x10+1000+100 --title=typing >/dev/null 2>&1 &); sleep 3",
            )
            running = container.exec_run(["pgrep", "-f", f"^{scroller}"], user="1000").output.split()
            assert len(running) == 1, f"the scrolling workload did not start: {running}"
            for r in range(args.rounds):
                t0, cpu0, sent0 = counters(container)
                time.sleep(args.seconds)
                t1, cpu1, sent1 = counters(container)
                idle.append({"cpu": (cpu1 - cpu0) / 1e9 / (t1 - t0), "bytes_per_s": (sent1 - sent0) / (t1 - t0)})
                views = ["noVNC", "Selkies"] if r % 2 == 0 else ["Selkies", "noVNC"]
                for view in views:
                    result = measure(
                        context, hub, user, view, bar, args.encoder, container, args.seconds, args.keys, scroller
                    )
                    results[view].append(result)
                    print(
                        f"round {r + 1} {view:8s} {result['fps']:.1f} frames/s (decoded {result['decoded_fps']:.0f}), "
                        "key to glyph "
                        f"{result['latency_ms']:.0f} ms (p90 {result['latency_p90_ms']:.0f}, "
                        f"{result['missed']} missed), {result['bytes_per_s'] / 1e6:.2f} MB/s, "
                        f"{result['cpu']:.2f} CPU s/s",
                        flush=True,
                    )
            context.close()
    finally:
        hub.stop()
        harness.cleanup(client)

    n, s = results["noVNC"], results["Selkies"]
    rows = []
    for key, label, fmt, scale in (
        ("fps", "frames shown per second", "{:.1f}", 1),
        ("latency_ms", "key to glyph, median ms", "{:.0f}", 1),
        ("latency_p90_ms", "key to glyph, p90 ms", "{:.0f}", 1),
        ("bytes_per_s", "bytes per second (MB/s)", "{:.2f}", 1e6),
        ("cpu", "CPU seconds per second, container", "{:.2f}", 1),
        ("cpu_Selkies", "  of which Selkies", "{:.2f}", 1),
        ("cpu_Xtigervnc", "  of which the X server (+ VNC)", "{:.2f}", 1),
        ("cpu_relay", "  of which the single-user relay", "{:.2f}", 1),
    ):
        nm, sm = median([x[key] for x in n]) / scale, median([x[key] for x in s]) / scale
        base = median([x[key] for x in idle]) / scale if key in ("bytes_per_s", "cpu") else None
        shown = "-" if base is None else fmt.format(base)
        rows.append((label, shown, fmt.format(nm), fmt.format(sm), f"{sm / nm:.2f}x" if nm else "-"))
    print()
    print(f"machine: {machine()}")
    print(f"desktop {WIDTH}x{HEIGHT}, a terminal scrolling; {args.rounds} rounds, {args.seconds:g} s, {args.keys} keys")
    print(f"Selkies' encoder: {args.encoder}")
    print(table(rows, ("metric", "no view", "noVNC", "Selkies", "Selkies / noVNC")))
    print(
        f"Selkies key to glyph, median: {median([x['latency_ms'] for x in s]):.1f} ms; "
        f"CPU: {median([x['cpu_Selkies'] for x in s]):.2f} cores (its own process)"
    )


if __name__ == "__main__":
    main()
