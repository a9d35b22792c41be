"""One scripted Docker API for the unit tests of both spawners' decisions (the real engine is in the other tiers).

``spawner.docker(method, ...)`` is the seam DockerSpawner gives (every Docker call goes through it), so a table
of answers per method stands in for the engine: an answer that is an exception is raised, a callable is called
with the call's arguments, :func:`in_turn` gives one answer per call.
"""

from __future__ import annotations

from types import SimpleNamespace

import requests
from docker.errors import APIError
from traitlets.config import Config


def api_error(status: int, explanation: str = "") -> APIError:
    response = requests.Response()
    response.status_code = status
    return APIError(f"{status}", response=response, explanation=explanation or None)


class ScriptedDocker:
    """``spawner.docker(...)`` answering from a table; ``calls`` lists the methods called, in order."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    async def __call__(self, method, *args, **kwargs):
        self.calls.append(method)
        answer = self.answers[method]
        if isinstance(answer, Exception):
            raise answer
        return answer(*args, **kwargs) if callable(answer) else answer


def in_turn(*answers):
    """One answer per call, the last one repeating; an exception among them is raised on its turn."""
    queue = list(answers)

    def answer(*args, **kwargs):
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return answer


def make(spawner_class, config=None, username="ana", server="", **answers):
    """A spawner of ``spawner_class`` for ``username``'s server, talking to a ScriptedDocker of ``answers``."""
    user = SimpleNamespace(name=username, url=f"/user/{username}/", id=1, escaped_name=username)
    orm_spawner = SimpleNamespace(name=server, state=None, server=None, user=None, id=1)
    spawner = spawner_class(user=user, orm_spawner=orm_spawner, config=config or Config())
    answers.setdefault("inspect_volume", api_error(404))  # no home from before a move to Swarm
    spawner.docker = ScriptedDocker(**answers)
    spawner.devdock_hub.docker = spawner.docker  # the hub-wide object's calls go to the same engine
    return spawner
