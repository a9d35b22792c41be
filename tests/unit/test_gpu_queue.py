"""The line for GPUs: its order and estimates (gpu_queue.py, pure) and the hub object's waiting in it (hubwide_gpu.py)
with the real allocator and no engine; the real hub, engine and Chromium are in tests/e2e/test_gpu_queue_journey.py.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from tornado import web
from traitlets.config import Config

from devdock_spawner import DevDockSpawner
from devdock_spawner.gpu import GPU, GPUAllocator
from devdock_spawner.gpu_queue import GPUQueue, Hold, Wait, Waiter, ordinal, wait_words
from devdock_spawner.profiles import Profile
from tests.unit import fake_docker

ONE_GPU = Profile("gpu", "1 GPU", gpus=1)
TWO_GPUS = Profile("gpu2", "2 GPUs", gpus=2)


# --- the line, pure ------------------------------------------------------------------------------


def test_gpu_queue_orders_each_line_first_come_first_served_and_keeps_a_place_on_rejoining():
    q = GPUQueue()
    q.join(Waiter("bo/", "gpu", 1, since=200.0))
    q.join(Waiter("ana/", "gpu", 1, since=100.0))
    q.join(Waiter("cy/", "1g.10gb", 1, since=50.0))  # another kind: another line
    assert [w.key for w in q.line("gpu")] == ["ana/", "bo/"]
    assert (q.position("ana/"), q.position("bo/"), q.position("cy/"), q.position("nobody/")) == (1, 2, 1, 0)
    q.join(Waiter("ana/", "gpu", 1, since=300.0))  # asking again (a restarted hub) keeps the earlier place
    assert q.position("ana/") == 1
    assert q.may_take("ana/", "gpu") and not q.may_take("bo/", "gpu") and not q.may_take("new/", "gpu")
    assert q.may_take("new/", "2g.20gb")  # nobody waits in that line
    assert q.leave("ana/") and not q.leave("ana/")
    assert q.may_take("bo/", "gpu")


def test_gpu_queue_estimate_is_when_the_units_ahead_and_mine_free_bounded_by_the_maximum_age():
    q = GPUQueue()
    now = 10_000.0
    # Two GPUs held: one by a server that may run 600 s more at most, one without any bound and no history.
    q.held("old/", Hold("gpu", 1, since=now - 100, deadline=now + 600))
    q.held("free-form/", Hold("gpu", 1, since=now - 50))
    q.join(Waiter("ana/", "gpu", 1, since=now - 10))
    q.join(Waiter("bo/", "gpu", 1, since=now - 5))
    assert q.estimate("ana/", free_now=0, now=now) == pytest.approx(600)
    assert q.estimate("bo/", free_now=0, now=now) is None  # the second unit's end is bounded by nothing
    assert q.estimate("bo/", free_now=1, now=now) == pytest.approx(600)
    assert q.estimate("ana/", free_now=1, now=now) == 0.0
    # With history (three holds of 300 s that ended), a hold is expected to last as long as the median.
    for i in range(3):
        q.held(f"past{i}/", Hold("gpu", 1, since=now - 1000))
        q.given_back(f"past{i}/", now=now - 700)
    assert q.usual_hold("gpu") == pytest.approx(300)
    assert q.estimate("ana/", free_now=0, now=now) == pytest.approx(200)  # old/: 100 s in of a usual 300 s
    assert q.estimate("bo/", free_now=0, now=now) == pytest.approx(250)  # free-form/: 50 s in of a usual 300 s


def test_gpu_queue_words_for_users():
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
    ]  # fmt: skip
    assert wait_words(30) == "about a minute"
    assert wait_words(25 * 60) == "about 25 minutes"
    assert wait_words(3 * 3600) == "about 3.0 hours"
    assert wait_words(72 * 3600) == "about 72 hours"
    assert "no estimate" in wait_words(None)


# --- the hub object's line (real allocator, no engine) --------------------------------------------


def _hub(gpus: int = 2):
    spawner = fake_docker.make(DevDockSpawner, config=Config())
    hub = spawner.devdock_hub
    hub._started = True  # no reconciliation here: there is no engine
    hub.allocator = GPUAllocator([GPU(i, f"GPU-{i}") for i in range(gpus)])
    return hub


def _wait(told: list, max_wait: float = 60, since: float | None = None) -> Wait:
    return Wait(time.time() if since is None else since, max_wait, lambda *args: told.append(args))


async def _settle():
    for _ in range(5):
        await asyncio.sleep(0)


async def test_gpu_queue_a_third_start_waits_in_line_and_gets_the_gpu_the_first_gives_back():
    hub = _hub(gpus=2)
    ana = await hub.allocate_gpus("ana/", ONE_GPU, 0)
    await hub.allocate_gpus("bo/", ONE_GPU, 0)
    cy_told, dee_told = [], []
    cy = asyncio.ensure_future(hub.allocate_gpus("cy/", ONE_GPU, 0, wait=_wait(cy_told)))
    await _settle()
    dee = asyncio.ensure_future(hub.allocate_gpus("dee/", ONE_GPU, 0, wait=_wait(dee_told)))
    await _settle()
    assert not cy.done() and not dee.done()
    assert cy_told[-1][:2] == (1, 1) and dee_told[-1][:2] == (2, 2)  # place, how many in line
    assert hub.allocator.holders()["GPU-0"] == ["ana/"]  # waiting holds nothing
    # A start that does not wait (gpu_queue off for it) is refused, and does not jump the line either.
    with pytest.raises(web.HTTPError) as refused:
        await hub.allocate_gpus("eve/", ONE_GPU, 0)
    assert refused.value.status_code == 409
    hub.release_gpus("ana/")
    got = await asyncio.wait_for(cy, 2)
    assert [g.uuid for g in got] == [ana[0].uuid]  # the first in line got the GPU ana gave back
    await _settle()
    assert not dee.done() and dee_told[-1][:2] == (1, 1)  # dee moved up
    # Leaving the line (JupyterHub cancels the pending start) frees the place.
    dee.cancel()
    await _settle()
    assert len(hub.gpu_queue) == 0


async def test_gpu_queue_two_gpus_first_in_line_is_not_starved_by_later_one_gpu_starts():
    hub = _hub(gpus=2)
    await hub.allocate_gpus("ana/", ONE_GPU, 0)
    await hub.allocate_gpus("bo/", ONE_GPU, 0)
    pair = asyncio.ensure_future(hub.allocate_gpus("pair/", TWO_GPUS, 0, wait=_wait([])))
    await _settle()
    single = asyncio.ensure_future(hub.allocate_gpus("single/", ONE_GPU, 0, wait=_wait([])))
    await _settle()
    hub.release_gpus("ana/")  # one GPU free: pair needs two, and single is behind pair
    await _settle()
    assert not pair.done() and not single.done()
    hub.release_gpus("bo/")
    assert len(await asyncio.wait_for(pair, 2)) == 2
    await _settle()
    assert not single.done()
    single.cancel()


async def test_gpu_queue_refuses_at_once_what_no_wait_can_meet():
    hub = _hub(gpus=2)
    with pytest.raises(web.HTTPError) as e:
        await hub.allocate_gpus("ana/", Profile("big", "3 GPUs", gpus=3), 0, wait=_wait([]))
    assert e.value.status_code == 409 and "only 2 of 2" in e.value.log_message
    await hub.allocate_gpus("bo/a", ONE_GPU, 0)
    await hub.allocate_gpus("x/", ONE_GPU, 0)
    with pytest.raises(web.HTTPError) as e:  # bo's cap is one GPU: waiting would not help
        await hub.allocate_gpus("bo/b", ONE_GPU, 1, wait=_wait([]))
    assert e.value.status_code == 409 and "at most 1" in e.value.log_message
    assert len(hub.gpu_queue) == 0


async def test_gpu_queue_fair_share_puts_who_used_the_gpus_least_lately_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'acct.sqlite'}"
    config = Config({"DevDockSpawner": {"gpu_queue_order": "fair-share", "accounting_url": url}})
    hub = fake_docker.make(DevDockSpawner, config=config).devdock_hub
    hub._started = True
    hub.allocator = GPUAllocator([GPU(0, "GPU-0")])
    now = datetime.now(UTC).replace(tzinfo=None)
    run = hub.ledger.started("heavy", "", "gpu", ["GPU-0"], when=now - timedelta(hours=3))
    hub.ledger.ended(run, "stopped", when=now - timedelta(hours=1))  # two GPU-hours, an hour ago
    await hub.allocate_gpus("holder/", ONE_GPU, 0)
    heavy = asyncio.ensure_future(hub.allocate_gpus("heavy/", ONE_GPU, 0, wait=_wait([])))
    await _settle()
    light = asyncio.ensure_future(hub.allocate_gpus("light/", ONE_GPU, 0, wait=_wait([])))  # later, but no use
    await _settle()
    assert [w.key for w in hub.gpu_queue.line("gpu")] == ["light/", "heavy/"]
    hub.release_gpus("holder/")
    assert [g.uuid for g in await asyncio.wait_for(light, 2)] == ["GPU-0"]
    await _settle()
    assert not heavy.done()
    heavy.cancel()


async def test_gpu_queue_longest_wait_ends_with_a_sentence_and_leaves_the_line():
    hub = _hub(gpus=1)
    await hub.allocate_gpus("ana/", ONE_GPU, 0)
    with pytest.raises(web.HTTPError) as e:
        await hub.allocate_gpus("bo/", ONE_GPU, 0, wait=_wait([], max_wait=600, since=time.time() - 601))
    assert e.value.status_code == 503 and "waited in line" in e.value.log_message
    assert len(hub.gpu_queue) == 0
