"""devdock's idle-culling policy (the cull_arbiter_hook's decisions), from tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from devdock_spawner.culler import Policy, culler_service, decide, policy_for
from devdock_spawner.profiles import load_profiles

PROFILES = load_profiles(
    [
        {"slug": "desktop", "display_name": "Desktop", "default": True},
        {"slug": "gpu", "display_name": "1 GPU", "gpus": 1},
        {"slug": "long-gpu", "display_name": "Training", "gpus": 2, "idle_timeout": 14400, "max_age": 0},
        {"slug": "short", "display_name": "Quick look", "idle_timeout": 600},
    ]
)
POLICY = policy_for(PROFILES, idle_timeout=28800, gpu_idle_timeout=7200, gpu_max_age=259200)
H = 3600

# (id, user_options, inactive seconds, age seconds, expected stop, words in the reason)
CASES = [
    ("cpu-busy", {"profile": "desktop"}, 60, 10 * H, False, ""),
    ("cpu-idle-7h", {"profile": "desktop"}, 7 * H, 7 * H, False, ""),
    ("cpu-idle-8h", {"profile": "desktop"}, 8 * H, 9 * H, True, "idle for 8 h"),
    ("default-profile-when-none-sent", {}, 8 * H, 9 * H, True, "idle"),
    ("gpu-idle-2h-goes-first", {"profile": "gpu"}, 2 * H, 3 * H, True, "the limit is 2 h"),
    ("gpu-idle-1h-stays", {"profile": "gpu"}, 1 * H, 3 * H, False, ""),
    ("gpu-busy-but-3-days", {"profile": "gpu"}, 10, 72 * H, True, "maximum age of 3 d"),
    ("profile-own-idle-limit", {"profile": "long-gpu"}, 3 * H, 5 * H, False, ""),
    ("profile-own-no-max-age", {"profile": "long-gpu"}, 10, 200 * H, False, ""),
    ("profile-short", {"profile": "short"}, 601, 700, True, "10 min"),
    ("unknown-profile-falls-back", {"profile": "gone"}, 8 * H, 9 * H, True, "idle"),
    ("never-active-uses-age", {"profile": "desktop"}, None, 9 * H, False, ""),
]


@pytest.mark.parametrize(
    ("options", "inactive", "age", "stop", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cull_decision(options, inactive, age, stop, words):
    server = {"name": "", "user": "u", "user_options": options}
    inactive_td = timedelta(seconds=inactive) if inactive is not None else None
    decided, reason = decide(server, inactive_td, timedelta(seconds=age), POLICY)
    assert decided is stop
    assert words in reason


def test_policy_survives_its_trip_to_the_culler_process():  # the hub sends it as JSON
    assert Policy.from_json(POLICY.to_json()) == POLICY
    contended = replace(POLICY, contended=("gpu",))
    assert Policy.from_json(contended.to_json()) == contended


def test_cull_max_age_extension_moves_the_stop_of_that_server_only():
    extended = replace(POLICY, extensions={"u/": 24 * H})
    gpu = {"name": "", "user": "u", "full_name": "u/", "user_options": {"profile": "gpu"}}
    other = {**gpu, "user": "v", "full_name": "v/"}
    assert decide(gpu, timedelta(seconds=10), timedelta(hours=80), extended) == (False, "")  # 3 d + 1 d
    stop, reason = decide(gpu, timedelta(seconds=10), timedelta(hours=96), extended)
    assert stop and "maximum age of 3 d for the gpu profile, extended by 1 d" in reason
    assert decide(other, timedelta(seconds=10), timedelta(hours=80), extended)[0]  # the control: not extended
    assert Policy.from_json(extended.to_json()) == extended


def test_cull_contention_stops_an_idle_gpu_server_sooner_only_while_others_wait_for_its_gpus():
    quiet = policy_for(PROFILES, gpu_idle_timeout=2 * H, contention_idle_timeout=1800)
    waited_for = replace(quiet, contended=("gpu", "long-gpu"))
    gpu = {"name": "", "user": "u", "user_options": {"profile": "gpu"}}
    cpu = {"name": "", "user": "u", "user_options": {"profile": "desktop"}}
    forty_minutes, an_hour = timedelta(minutes=40), timedelta(hours=1)
    assert decide(gpu, forty_minutes, an_hour, quiet) == (False, "")  # nobody waits: the usual 2 h
    stop, reason = decide(gpu, forty_minutes, an_hour, waited_for)
    assert stop and "while others waited in line for its GPUs" in reason and "30 min" in reason
    assert decide(gpu, timedelta(minutes=20), an_hour, waited_for) == (False, "")  # idle, but not that long
    assert decide(cpu, timedelta(hours=7), an_hour * 8, waited_for) == (False, "")  # no GPU: not contended
    off = replace(waited_for, contention_idle_timeout=0)
    assert decide(gpu, forty_minutes, an_hour, off) == (False, "")  # 0: no shorter limit


def test_the_culler_service_holds_the_least_scopes_it_needs():
    service, role = culler_service(28800, cull_every=30)
    assert set(role["scopes"]) == {
        "list:users", "read:users:activity", "read:servers", "delete:servers", "custom:devdock:cull-notice"
    }  # fmt: skip
    assert role["services"] == [service["name"]] == ["devdock-culler"]
    assert "--cull-every=30" in service["command"] and "--timeout=28800" in service["command"]
    assert "--cull-users=False" in service["command"]  # servers are stopped, users never deleted


@pytest.mark.parametrize("bad", [-1, "1h", True, 1.5])
def test_profile_limits_are_checked(bad):
    with pytest.raises(ValueError, match="idle_timeout must be a number of seconds"):
        load_profiles([{"slug": "p", "idle_timeout": bad}])
