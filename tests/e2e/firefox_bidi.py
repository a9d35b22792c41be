"""Drive the desktop's Firefox over WebDriver BiDi (Firefox's own remote protocol), from inside the user's container.

Run there with the image's Python (tornado's websocket client):

    python firefox_bidi.py HUB_URL USER PASSWORD APP_PATH

Firefox must run with ``--remote-debugging-port 9222``. The script logs in on the hub's login page as a person
would (the form), opens the user's JupyterLab and then ``APP_PATH`` (a web app behind jupyter-server-proxy), and
prints one JSON line: what each page was (its title and some of its text).
"""

import asyncio
import json
import sys
import time

from tornado.websocket import websocket_connect

#: Seconds one BiDi command may take, ``session.new`` (it waits for the browser's own startup, slow on a loaded
#: machine's first run of a profile), and the whole run (a loaded machine runs JupyterLab slowly in Firefox).
CALL_TIMEOUT = 90
SESSION_TIMEOUT = 180
RUN_TIMEOUT = 360


def step(text: str) -> None:
    print(f"firefox_bidi: {text}", file=sys.stderr, flush=True)


async def main(hub: str, user: str, password: str, app_path: str) -> dict:
    for _ in range(60):
        try:
            ws = await websocket_connect("ws://127.0.0.1:9222/session")
            break
        except OSError:
            await asyncio.sleep(1)
    else:
        raise RuntimeError("Firefox's WebDriver BiDi endpoint did not answer")
    counter = 0

    async def call(method: str, params: dict, timeout: float = CALL_TIMEOUT) -> dict:
        nonlocal counter
        counter += 1
        await ws.write_message(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(ws.read_message(), timeout)
            if raw is None:
                raise RuntimeError(f"{method}: Firefox closed the connection")
            message = json.loads(raw)
            if message.get("id") == counter:
                if message.get("type") == "error":
                    raise RuntimeError(f"{method}: {message.get('error')}: {message.get('message')}")
                return message["result"]

    step("BiDi connected")
    await call("session.new", {"capabilities": {}}, SESSION_TIMEOUT)
    context = (await call("browsingContext.getTree", {}))["contexts"][0]["context"]

    async def go(url: str) -> None:
        # Not waiting for the load to complete (a busy page may never say so): each step polls for what it needs.
        await call("browsingContext.navigate", {"context": context, "url": url, "wait": "none"})

    async def js(expression: str):
        result = await call(
            "script.evaluate", {"expression": expression, "target": {"context": context}, "awaitPromise": True}
        )
        return result.get("result", {}).get("value")

    async def until(expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                value = await js(expression)
                if value:
                    return value
            except RuntimeError:
                pass  # the page is navigating
            await asyncio.sleep(0.5)
        raise RuntimeError(f"not within {timeout} s: {expression}")

    step("session open")
    await go(f"{hub}/hub/login")
    await until("location.pathname.endsWith('/hub/login') && document.getElementById('login_submit') !== null")
    await js(
        f"document.getElementById('username_input').value = {json.dumps(user)};"
        f"document.getElementById('password_input').value = {json.dumps(password)};"
        "document.getElementById('login_submit').click(); true"
    )
    await until("!location.pathname.endsWith('/hub/login')")
    step("logged in")
    await go(f"{hub}/user/{user}/lab")
    # The user's JupyterLab page as its server sent it (its config names the server's base URL): what the hub's
    # login in Firefox opened. Drawing the whole application is JupyterLab's own work, and slow on a busy machine.
    lab = await until(
        "location.pathname.includes('/lab') && document.getElementById('jupyter-config-data') &&"
        " JSON.parse(document.getElementById('jupyter-config-data').textContent).baseUrl + ' ' + document.title"
    )
    lab_url = await js("location.href")
    step("JupyterLab shown")
    await go(f"{hub}{app_path}")
    on_app = f"location.pathname === {json.dumps(app_path)}"
    app = await until(f"{on_app} && document.body && document.body.innerText.trim()")
    await go(f"{hub}/user/{user}/lab")  # what the desktop then shows
    return {"lab_title": lab, "lab_url": lab_url, "app_text": app[:200]}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(asyncio.wait_for(main(*sys.argv[1:5]), RUN_TIMEOUT))))
