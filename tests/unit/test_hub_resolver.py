"""The hub's aiohttp connections resolve names in a thread, not through aiodns/pycares (a SIGSEGV seen twice at hub
starts: devdock_spawner.hub.resolve_names_in_threads). Checked on aiohttp's own connector."""

from __future__ import annotations

import asyncio

import aiohttp
import aiohttp.connector
import aiohttp.resolver
from traitlets.config import Config

from devdock_spawner import hub


def _resolver_of_a_new_connector():
    async def make():
        connector = aiohttp.TCPConnector()
        try:
            return type(connector._resolver)
        finally:
            await connector.close()

    return asyncio.run(make())


def test_the_hubs_aiohttp_resolves_names_in_threads_not_through_pycares(monkeypatch):
    # Positive control: with aiodns installed (JupyterHub requires it), aiohttp would take the c-ares resolver.
    monkeypatch.setattr(aiohttp.connector, "DefaultResolver", aiohttp.resolver.AsyncResolver)
    assert _resolver_of_a_new_connector() is aiohttp.resolver.AsyncResolver
    hub.configure(Config(), report_gpu_support=False)
    assert _resolver_of_a_new_connector() is aiohttp.resolver.ThreadedResolver
