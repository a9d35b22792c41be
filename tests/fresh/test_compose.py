"""``docker compose up --build -d`` as the README has it, from a clean clone, on the tier's engine with every image tag
but the base removed: the stack builds what it runs, answers, signs alice in through its OpenID Connect provider in
Debian's Chromium, and starts her server with the default profile and the shipped defaults (a 50 GiB home).

Only the stack's ports are this run's (and the URLs that name them); its project name, volumes and every other
setting are docker-compose.yml's. The tier's engine is its own, so the fixed project name ``devdock`` meets nothing.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.fresh.fresh import HOME_IMAGES, LOGS, Compose, cleanup_dir, clone, shot, timings, until_lab

pytestmark = pytest.mark.timeout(3600)

GiB = 1024**3
#: What docker-compose.yml builds (and the base image the tier keeps).
COMPOSE_IMAGES = {
    "debian:bookworm-slim",
    "devdock/desktop:latest",
    "devdock/hub:latest",
    "devdock/proxy:latest",
    "devdock/oidc:latest",
    "devdock/ssh-gateway:latest",
}


@pytest.fixture(scope="module")
def stack(engine, tmp_path_factory):
    engine.clear()  # every image tag but the base: the stack runs what it built
    checkout = tmp_path_factory.mktemp("fresh-compose") / "devdock"
    clone(checkout)
    s = Compose(checkout, engine)
    try:
        s.up()
        yield s
    finally:
        (LOGS / "compose-logs.txt").write_text(s.logs())
        s.down()
        engine.clear(images=False)
        cleanup_dir(checkout)


def readme_url(stack: Compose) -> str:
    """The URL the README tells a newcomer to open after the compose command, on this run's port."""
    readme = (stack.checkout / "README.md").read_text()
    found = re.search(r"Open <(http://[^>/]+):8000/?>", readme)
    assert found, "README.md no longer says which URL to open after docker compose up"
    return f"{found.group(1)}:{stack.http_port}"


def test_compose_up_build_from_a_clean_clone_then_sso_and_a_first_spawn(stack, engine, context):
    assert engine.tags() == COMPOSE_IMAGES, engine.tags()

    alice = context()
    page = alice.new_page()
    t0 = time.monotonic()
    page.goto(readme_url(stack) + "/")
    # The hub sends her to the demo identity provider; she signs in with the password it generated.
    page.wait_for_url(f"{stack.issuer}/interaction/**", timeout=60_000)
    page.fill("#username", "alice")
    page.fill("#password", stack.passwords["alice"])
    shot(page, "compose-idp")
    page.click("#sign-in")
    until_lab(page, "alice", stack.logs)
    timings("compose: sign-in to JupyterLab's launcher", time.monotonic() - t0)
    shot(page, "compose-lab")

    container = engine.user_container("alice")
    assert container is not None and container.status == "running"
    home = next(m for m in container.attrs["Mounts"] if m["Destination"] == "/home/alice")
    assert engine.client.volumes.get(home["Name"]).attrs["Options"]["type"] == "ext4"
    size = int(container.exec_run(["df", "-B1", "--output=size", "/home/alice"]).output.decode().split()[-1])
    assert 48 * GiB < size <= 50 * GiB, size
    assert (HOME_IMAGES / f"{home['Name']}.img").is_file()
