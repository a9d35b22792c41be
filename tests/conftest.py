"""Fixtures shared by the tiers that run a real engine (a real hub, a hub factory), each tier's marker by its
folder, and how pytest-xdist spreads the modules."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests import harness

#: Every test carries the marker of its tier, from its folder (``pytest -m integration`` runs that tier, nothing
#: else): a test needs no marker of its own, and none goes unmarked.
TIERS = ("unit", "integration", "e2e", "compose", "swarm", "fresh")


@pytest.fixture(scope="session")
def docker_client():
    client = harness.docker_client()
    harness.require_image(client)
    yield client
    harness.cleanup(client)


@pytest.fixture(scope="session")
def hub(docker_client, tmp_path_factory):
    """The shipped settings' hub, one per worker, for the modules that need nothing else."""
    factory = HubFactory(docker_client, tmp_path_factory)
    try:
        yield factory("hub")
    finally:
        factory.stop_all()


class HubFactory:
    """``make_hub(**config)``: a started :class:`tests.harness.Hub` with these settings (``Hub``'s own keyword
    arguments: ``extra_config``, ``subdomains``, ``host``, ``DEVDOCK_*=`` environment...), with its data in a new
    temporary folder named ``name`` (or in ``data_dir``); ``start=False`` leaves it to the test to start, for a
    test that prepares something with the hub's settings first. ``defaults``: settings of every hub it makes, unless
    given (the browser tier's: the shipped ``desktop_prestart``). Every hub it made is stopped when its scope ends
    (a stopped one stays stopped), and a failing test gets the log of each (``pytest_runtest_makereport``)."""

    def __init__(self, client, tmp_path_factory, **defaults):
        self.client, self.tmp_path_factory, self.defaults = client, tmp_path_factory, defaults
        self.hubs: list[harness.Hub] = []

    def __call__(self, name: str = "hub", *, data_dir: Path | None = None, start: bool = True, **config) -> harness.Hub:
        hub = harness.Hub(self.client, data_dir or self.tmp_path_factory.mktemp(name), **{**self.defaults, **config})
        self.hubs.append(hub)
        if start:
            hub.start()
        return hub

    def stop_all(self) -> None:
        """Stop every hub, then remove the servers they left running (a hub that stops leaves its users' containers
        running, as in production: here nothing needs them after the module, and each idle desktop left would
        share the run's two cores and its memory with every later module until the run ends)."""
        for hub in reversed(self.hubs):
            hub.stop()
        hub_ids = {hub.env["DEVDOCK_HUB_ID"] for hub in self.hubs}
        for container in self.client.containers.list(
            all=True, filters={"label": f"{harness.RUN_LABEL}={harness.RUN_ID}"}
        ):
            if container.labels.get("io.devdock.hub") in hub_ids:
                container.remove(force=True)


@pytest.fixture(scope="module")
def hub_defaults() -> dict:
    """Settings of every hub ``make_hub`` makes in a module, unless given (a tier's conftest may set its own)."""
    return {}


@pytest.fixture(scope="module")
def make_hub(docker_client, tmp_path_factory, hub_defaults):
    """A module's hubs (see :class:`HubFactory`): module scope, because pytest-xdist keeps a module whole on one
    worker, so a module's tests share its hubs and the hubs stop when the module ends."""
    factory = HubFactory(docker_client, tmp_path_factory, **hub_defaults)
    try:
        yield factory
    finally:
        factory.stop_all()


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


#: The longest modules (and tiers), longest first, from the suite's own junit times on a 2-core machine (2026-12-07):
#: they start first, so that the shorter ones fill the other workers around them (without this, a long module that
#: happens to come late leaves one worker running alone at the end).
LONGEST_FIRST = (
    "tests/e2e/test_cull_journey.py",
    "tests/integration/test_operations.py",
    "tests/e2e/test_gpu_queue_journey.py",
    "tests/e2e/test_gpu_reservation_journey.py",
    "tests/swarm/",
    "tests/fresh/",
    "tests/integration/test_failure.py",
    "tests/integration/test_home_size.py",
    "tests/compose/",
    "tests/integration/test_ssh_gateway.py",
    "tests/integration/test_isolation.py",
    "tests/integration/test_ssh.py",
    "tests/e2e/test_desktop_viewer.py",
    "tests/e2e/test_desktop_selkies.py",
    "tests/integration/test_limits.py",
)


def tier_of(item) -> str:
    """The tier of a test: the folder under tests/ it lives in."""
    parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
    assert len(parts) > 1 and parts[0] in TIERS, f"{item.nodeid} is in no tier's folder (tests/<tier>/, {TIERS})"
    return parts[0]


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m selection reads the markers
def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, and run the longest modules first (a stable sort: each module's tests keep
    their order and stay together)."""
    for item in items:
        item.add_marker(tier_of(item))

    def rank(item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, there only when it is
def pytest_xdist_make_scheduler(config, log):
    """Under pytest-xdist, each module runs whole on one worker, in order, with its own hub; the compose tier (one
    stack with a fixed project name), the swarm tier (the engine's one swarm) and the fresh tier (its own engine)
    each run whole on one worker; the scopes start in the collection's order (LONGEST_FIRST)."""
    from xdist.scheduler import LoadScopeScheduling  # only where xdist runs the tests

    # xdist orders the scopes by their number of tests unless told not to: LONGEST_FIRST's order is kept instead.
    config.option.loadscopereorder = False

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
        hubs = [item.funcargs.get(name) for name in ("hub", "swarm_hub")]
        factory = item.funcargs.get("make_hub")
        hubs += factory.hubs if factory is not None else []
        if client is not None:
            text = harness.dump_diagnostics(client, [h for h in hubs if isinstance(h, harness.Hub)], item.name)
            report.sections.append(("devdock diagnostics", text[-20000:]))
    return report
