"""How a start is told and watched (a mixin of DevDockSpawner): the spawn page's progress events, and waiting for
the server to answer while noticing at once when its container died.
"""

from __future__ import annotations

import asyncio
import time

from tornado import web
from traitlets.config import LoggingConfigurable

from .container import last_lines


class ProgressMixin(LoggingConfigurable):
    """Progress events and the wait for a starting server."""

    _progress_events: list

    def _emit(self, progress: int, message: str):
        events = getattr(self, "_progress_events", None)
        if events is None:
            events = self._progress_events = []
        events.append({"progress": progress, "message": message})

    async def progress(self):
        """Events for the spawn-pending page, as they happen during ``start()``."""
        sent = 0
        while True:
            events = getattr(self, "_progress_events", [])
            while sent < len(events):
                yield events[sent]
                sent += 1
            if getattr(self, "_start_finished", True):  # JupyterHub stops asking at the same moment
                return
            await asyncio.sleep(0.25)

    async def _wait_for_server(self, ip: str, port: int) -> None:
        """Wait until the server accepts connections, or fail at once, with its output, if it exited.

        JupyterHub would otherwise wait the whole ``http_timeout`` for a container that died at start.
        """
        deadline = time.monotonic() + self.http_timeout
        checked = time.monotonic()
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1)
                writer.close()
                return
            except (TimeoutError, OSError):
                pass
            # Knock every 50 ms when this server starts alone, so the hub hears of it at once; when a class
            # logs in together, knock less often (50 ms per server starting, at most 0.5 s): the knocking
            # costs the hub CPU that the starting servers need. Ask Docker whether it died twice a second.
            if time.monotonic() - checked >= 0.5:
                checked = time.monotonic()
                problem = await self._exit_report()
                if problem:
                    raise web.HTTPError(500, problem)
            await asyncio.sleep(min(0.5, 0.05 * max(1, self.devdock_hub.starting)))

    async def _exit_report(self) -> str:
        """Empty while the server's container runs; else what the user should read: exit code and output."""
        state = (await self.docker("inspect_container", self.container_id))["State"]
        if state["Running"]:
            return ""
        logs = await self.docker("logs", self.container_id, tail=8)
        return (
            f"The server stopped right after starting (exit code {state['ExitCode']}). "
            f"Its last output: {last_lines(logs)}"
        )
