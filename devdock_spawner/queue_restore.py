"""A restarted hub gives the starts that waited in line for GPUs their place back.

A start waiting in line keeps ``gpu_queue_since`` in its server's state in the hub's database (spawner_gpu.py);
JupyterHub forgets pending starts when it stops. When the hub is up again, devdock's proxy class (its first
route check, which JupyterHub runs at every start) starts each of them again through the hub's own REST API, in
the order they joined, with the options the user chose (JupyterHub keeps them on the server's row). Each request
carries a token of the user whose server it is, good for that one server and for five minutes: the hub does
only what the user asked for, with no more rights than theirs. The spawner then joins the line with its old
``since``, so it has its old place.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

#: How long a restored start's token is good for (it is used at once).
TOKEN_SECONDS = 300
#: How long to keep knocking while the hub's API does not answer yet (it listens just after the first route check).
API_WAIT = 60


def waiting_servers(db) -> list[tuple[float, object]]:
    """``(since, orm spawner)`` of every server whose start waited in line when the hub stopped, first first."""
    from jupyterhub import orm  # the hub's own models; imported here, where a hub runs

    found = []
    for orm_spawner in db.query(orm.Spawner):
        since = (orm_spawner.state or {}).get("gpu_queue_since")
        if since and orm_spawner.user is not None:
            found.append((float(since), orm_spawner))
    return sorted(found, key=lambda pair: (pair[0], pair[1].user.name, pair[1].name or ""))


async def restore_line(app) -> int:
    """Start again every start that waited in line when the hub stopped; how many were."""
    waiting = waiting_servers(app.db)
    if not waiting:
        return 0
    app.log.info("devdock: %d start(s) waited in line for GPUs when the hub stopped: back in line", len(waiting))
    client = AsyncHTTPClient()
    # All at once (JupyterHub answers a slow start after 10 s): each start's place is its own ``since``, not the
    # order in which they arrive.
    await asyncio.gather(*(_restart(app, client, orm_spawner) for _since, orm_spawner in waiting))
    return len(waiting)


async def _restart(app, client, orm_spawner) -> None:
    user = app.users[orm_spawner.user]
    server = orm_spawner.name or ""
    full = f"{user.name}/{server}"
    token = user.new_api_token(
        note="devdock: back in line for GPUs after a hub restart",
        expires_in=TOKEN_SECONDS,
        scopes=[f"servers!server={full}"],
    )
    path = f"servers/{quote(server, safe='')}" if server else "server"
    url = f"{app.hub.url}api/users/{quote(user.name, safe='')}/{path}"
    request = HTTPRequest(
        url,
        method="POST",
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        body=json.dumps(orm_spawner.user_options or {}),
        request_timeout=30,
    )
    for _ in range(API_WAIT):
        try:
            response = await client.fetch(request, raise_error=False)
        except OSError:  # the hub's API does not listen yet
            await asyncio.sleep(1)
            continue
        if response.code == 400 and (b"is already" in response.body or b"is pending" in response.body):
            # JupyterHub still checks the server it found gone at its start (its stop is under way), or the user
            # started it again meanwhile (then that start has the place).
            await asyncio.sleep(1)
            continue
        if response.code in (201, 202):
            app.log.info("devdock: %s is back in line for GPUs", full)
        elif response.code >= 500:
            app.log.warning("devdock: the start of %s, back in line, ended before its turn (cancelled or failed)", full)
        else:
            app.log.error("devdock: could not put %s back in line (%s): %s", full, response.code, response.body[:300])
        return
    app.log.error("devdock: could not put %s back in line: the hub's API did not answer", full)


def restore_soon(app) -> asyncio.Task | None:
    """Schedule :func:`restore_line` on the hub's event loop (once per hub process)."""
    if getattr(app, "_devdock_line_restored", False):
        return None
    app._devdock_line_restored = True

    async def run():
        try:
            await restore_line(app)
        except Exception:  # noqa: BLE001 - the hub runs on; its log says why
            app.log.exception("devdock: the line for GPUs could not be restored")

    return asyncio.ensure_future(run())
