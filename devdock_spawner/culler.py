"""Idle culling with jupyterhub-idle-culler: devdock's policy, as its ``cull_arbiter_hook``.

jupyterhub-idle-culler (the ecosystem's own) runs as a hub-managed service with the least scopes it needs
(:func:`culler_service`). It asks this module, for every ready server, whether to stop it
(:func:`arbiter`), and devdock decides from the server's profile (:func:`decide`, pure):

- a server is stopped after ``idle_timeout`` seconds without activity; a profile may set its own, and servers
  holding GPUs default to the shorter ``gpu_idle_timeout``, so scarce GPUs are given back first;
- a server is stopped at ``max_age`` seconds whatever its activity (off by default for CPU servers;
  ``gpu_max_age`` for GPU servers): a fair share of a GPU, not a lease for ever;
- while starts wait in line for the kind of GPU a server holds, its idle limit is the shorter
  ``gpu_contention_idle_timeout``: a forgotten tab does not hold a GPU someone waits for;
- what counts as activity is the server's own reports (devdock's proxy class ignores the proxy's per-message
  activity): JupyterLab, terminals, kernels, SSH sessions and real desktop input.

Before the stop, the culler tells the hub why (``POST /hub/api/devdock/culled/<user>/<server>``), so the
user's home page can say why their server stopped and when, and admins can count culls.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest

#: Defaults that fit a shared GPU box (docs/sharing.md): a forgotten desktop gives its GPU back after two hours,
#: a CPU-only server after eight, and nobody holds a GPU for more than three days in one go.
IDLE_TIMEOUT = 8 * 3600
GPU_IDLE_TIMEOUT = 2 * 3600
GPU_MAX_AGE = 3 * 24 * 3600
#: While someone waits for its kind of GPU, an idle GPU server is stopped after half an hour.
GPU_CONTENTION_IDLE_TIMEOUT = 1800
CULL_EVERY = 60
#: How long the culler keeps the policy it asked the hub for (its profiles change only at restarts, but who waits
#: in line for GPUs changes all the time).
POLICY_TTL = 10
NOTICE_SCOPE = "custom:devdock:cull-notice"


@dataclass(frozen=True)
class ProfileRule:
    idle_timeout: int
    max_age: int = 0  # 0: no maximum


@dataclass(frozen=True)
class Policy:
    """What the culler applies; built by the hub from its settings and profiles, handed over as JSON."""

    idle_timeout: int = IDLE_TIMEOUT
    default_profile: str = ""
    profiles: dict[str, ProfileRule] = field(default_factory=dict)
    #: the idle limit of a server whose profile's GPUs someone waits for now (``contended``); 0: none
    contention_idle_timeout: int = GPU_CONTENTION_IDLE_TIMEOUT
    contended: tuple[str, ...] = ()
    #: seconds added to the maximum age of running servers whose users extended it ({"user/server": seconds})
    extensions: dict[str, int] = field(default_factory=dict)
    #: running servers a GPU booking cuts short: {"user/server": [ISO time (UTC) they must end at, why]}
    deadlines: dict[str, tuple[str, str]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "idle_timeout": self.idle_timeout,
                "default_profile": self.default_profile,
                "profiles": {k: vars(v) for k, v in self.profiles.items()},
                "contention_idle_timeout": self.contention_idle_timeout,
                "contended": list(self.contended),
                "extensions": dict(self.extensions),
                "deadlines": {k: list(v) for k, v in self.deadlines.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Policy:
        data = json.loads(text)
        return cls(
            idle_timeout=int(data["idle_timeout"]),
            default_profile=str(data.get("default_profile", "")),
            profiles={
                k: ProfileRule(int(v["idle_timeout"]), int(v.get("max_age", 0))) for k, v in data["profiles"].items()
            },
            contention_idle_timeout=int(data.get("contention_idle_timeout", 0)),
            contended=tuple(str(p) for p in data.get("contended", ())),
            extensions={str(k): int(v) for k, v in (data.get("extensions") or {}).items()},
            deadlines={str(k): (str(v[0]), str(v[1])) for k, v in (data.get("deadlines") or {}).items()},
        )


def policy_for(
    profiles,
    idle_timeout: int = IDLE_TIMEOUT,
    gpu_idle_timeout: int = GPU_IDLE_TIMEOUT,
    gpu_max_age: int = GPU_MAX_AGE,
    max_age: int = 0,
    contention_idle_timeout: int = GPU_CONTENTION_IDLE_TIMEOUT,
) -> Policy:
    """The policy for a hub's profiles (:class:`devdock_spawner.profiles.Profile`): their own ``idle_timeout`` and
    ``max_age`` where set, else the GPU defaults for profiles with GPUs and the site's for the others."""
    rules = {}
    for p in profiles:
        gpu = bool(p.gpus)
        rules[p.slug] = ProfileRule(
            idle_timeout=p.idle_timeout if p.idle_timeout is not None else (gpu_idle_timeout if gpu else idle_timeout),
            max_age=p.max_age if p.max_age is not None else (gpu_max_age if gpu else max_age),
        )
    default = next((p.slug for p in profiles if p.default), profiles[0].slug if profiles else "")
    return Policy(
        idle_timeout=idle_timeout,
        default_profile=default,
        profiles=rules,
        contention_idle_timeout=contention_idle_timeout,
    )


def rule_for(policy: Policy, profile: str) -> ProfileRule:
    return policy.profiles.get(profile or policy.default_profile, ProfileRule(policy.idle_timeout))


def decide(
    server: dict, inactive: timedelta | None, age: timedelta | None, policy: Policy, now: datetime | None = None
) -> tuple[bool, str]:
    """``(stop it?, why)`` for one ready server model of the hub's REST API (``now``: aware, for GPU bookings)."""
    profile = ((server.get("user_options") or {}).get("profile")) or policy.default_profile
    deadline = policy.deadlines.get(server.get("full_name", ""))
    if deadline and datetime.fromisoformat(deadline[0]) <= (now or datetime.now(UTC)):
        return True, deadline[1]
    rule = rule_for(policy, profile)
    max_age = rule.max_age + policy.extensions.get(server.get("full_name", ""), 0) if rule.max_age else 0
    if max_age and age is not None and age.total_seconds() >= max_age:
        extended = f", extended by {duration(max_age - rule.max_age)}" if max_age > rule.max_age else ""
        return True, f"it reached the maximum age of {duration(rule.max_age)} for the {profile} profile{extended}"
    if rule.idle_timeout and inactive is not None and inactive.total_seconds() >= rule.idle_timeout:
        return (
            True,
            f"it was idle for {duration(inactive.total_seconds())} (the limit is {duration(rule.idle_timeout)})",
        )
    shorter = policy.contention_idle_timeout
    if profile in policy.contended and shorter and inactive is not None and inactive.total_seconds() >= shorter:
        return (
            True,
            f"it was idle for {duration(inactive.total_seconds())} while others waited in line for its GPUs (the "
            f"limit while others wait is {duration(shorter)})",
        )
    return False, ""


def duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 86400 and seconds % 3600 == 0:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h" if seconds % 86400 else f"{seconds // 86400} d"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min" if seconds % 3600 >= 60 else f"{seconds // 3600} h"
    if seconds >= 60:
        return f"{seconds // 60} min"
    return f"{seconds} s"


_policy: tuple[float, Policy] | None = None


async def _load_policy() -> Policy:
    """The hub's policy (``GET /hub/api/devdock/cull-policy``), asked again every ``POLICY_TTL`` seconds."""
    global _policy

    if _policy is None or time.monotonic() - _policy[0] > POLICY_TTL:
        request = HTTPRequest(
            f"{os.environ['JUPYTERHUB_API_URL']}/devdock/cull-policy",
            headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}"},
            request_timeout=10,
        )
        response = await AsyncHTTPClient().fetch(request)
        _policy = (time.monotonic(), Policy.from_json(response.body.decode()))
    return _policy[1]


async def arbiter(inactive: timedelta | None, inactive_limit: int, server: dict) -> bool:
    """jupyterhub-idle-culler's ``cull_arbiter_hook``: devdock's decision, and a word to the hub before the stop."""
    now_age = _age(server)
    stop, reason = decide(server, inactive, now_age, await _load_policy())
    if stop:
        await _tell_the_hub(server, reason, inactive)
    return stop


def _age(server: dict) -> timedelta | None:

    started = server.get("started")
    if not started:
        return None
    return datetime.now(UTC) - datetime.fromisoformat(started.replace("Z", "+00:00"))


async def _tell_the_hub(server: dict, reason: str, inactive: timedelta | None = None) -> None:
    """Record why the server stops, for its user's home page (best effort: the stop happens anyway)."""

    # The REST API's server model names its owner in full_name ("user/server"); server names hold no "/".
    user, _, name = server.get("full_name", "").rpartition("/")
    url = f"{os.environ['JUPYTERHUB_API_URL']}/devdock/culled/{quote(user, safe='')}/{quote(name, safe='')}"
    request = HTTPRequest(
        url,
        method="POST",
        headers={"Authorization": f"token {os.environ['JUPYTERHUB_API_TOKEN']}", "Content-Type": "application/json"},
        body=json.dumps({"reason": reason, "inactive_seconds": inactive.total_seconds() if inactive else 0}),
        request_timeout=10,
    )
    try:
        await AsyncHTTPClient().fetch(request)
    except Exception as e:  # noqa: BLE001 - the culler must go on
        print(f"devdock: could not tell the hub why {user}/{name} stops: {e}", flush=True)


def culler_service(
    timeout: int = IDLE_TIMEOUT, cull_every: int = CULL_EVERY, concurrency: int = 10
) -> tuple[dict, dict]:
    """``(service, role)`` for ``c.JupyterHub.services`` and ``c.JupyterHub.load_roles``.

    The role holds what the culler needs and nothing more: list users, read their activity and servers, stop
    servers, and devdock's own scope to ask for the policy and say why it stops a server. ``timeout`` is only
    the culler's fallback: the arbiter decides with the hub's policy.
    """
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "culler_config.py")
    service = {
        "name": "devdock-culler",
        "command": [
            sys.executable,
            "-m",
            "jupyterhub_idle_culler",
            f"--config={config}",
            f"--timeout={timeout}",
            f"--cull-every={cull_every}",
            f"--concurrency={concurrency}",
            "--cull-users=False",
            "--remove-named-servers=False",
        ],
    }
    role = {
        "name": "devdock-culler",
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers", NOTICE_SCOPE],
        "services": ["devdock-culler"],
    }
    return service, role
