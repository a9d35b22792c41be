"""Fixtures shared by the integration and browser tiers: a real engine and a real hub."""

from __future__ import annotations

import signal

import pytest

from tests import harness


@pytest.fixture(scope="session")
def docker_client():
    client = harness.docker_client()
    harness.require_image(client)
    yield client
    harness.cleanup(client)


@pytest.fixture(scope="session")
def hub(docker_client, tmp_path_factory):
    h = harness.Hub(docker_client, tmp_path_factory.mktemp("hub"))
    h.start()
    yield h
    h.stop()


@pytest.fixture(scope="session")
def device_nodes(tmp_path_factory):
    """Two stand-in GPU device nodes, for GPU tests on an engine without GPUs."""
    return harness.make_device_nodes(tmp_path_factory.mktemp("dev"), 2)


def pytest_configure(config):
    """SIGINT back for the hubs the tests start. A test command started in the background (``nohup``, ``&`` in a
    script, a CI runner) inherits SIGINT ignored, and an ignored signal stays ignored through exec: the hub's idle
    culler then never stops on the SIGINT the hub sends it, the hub waits out its 30 s for it, is killed by the
    harness, and leaves the culler and its proxy running (half a minute and two processes for every hub stopped).
    A handled signal is reset at exec, so the hubs, and what they start, get SIGINT's default again."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    harness.resolve_localhost_subdomains()


#: The longest modules (and tiers), longest first, from the suite's own junit times on a 2-core machine: they start
#: first, so that the shorter ones fill the other workers around them (without this, a long module that happens to
#: come late leaves one worker running alone at the end).
LONGEST_FIRST = (
    "tests/fresh/",
    "tests/e2e/test_cull_journey.py",
    "tests/swarm/",
    "tests/e2e/test_desktop_viewer.py",
    "tests/integration/test_failure.py",
    "tests/integration/test_ssh.py",
    "tests/compose/",
    "tests/integration/test_isolation.py",
    "tests/integration/test_operations.py",
    "tests/integration/test_home_size.py",
)


def pytest_collection_modifyitems(config, items):
    """Run the longest modules first (a stable sort: each module's tests keep their order and stay together)."""

    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, there only when it is
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, each module runs whole on one worker, in order, with its own hub; the compose tier (one
    stack with a fixed project name), the swarm tier (the engine's one swarm) and the fresh tier (its own engine)
    each run whole on one worker."""
    from xdist.scheduler import LoadScopeScheduling  # only where xdist runs the tests

    class TierScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            tier = next((t for t in ("compose", "swarm", "fresh") if nodeid.startswith(f"tests/{t}/")), None)
            return tier or nodeid.split("::", 1)[0]

    return TierScheduling(config, log)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when == "call" and "docker_client" in item.fixturenames:
        client = item.funcargs.get("docker_client")
        hub = item.funcargs.get("hub") or item.funcargs.get("swarm_hub")
        if client is not None:
            text = harness.dump_diagnostics(client, hub, item.name)
            report.sections.append(("devdock diagnostics", text[-20000:]))
    return report
