"""A missing image is a sentence with the command that fixes it, for the user's spawn page and the admin's hub log.

The real engine's version (a first spawn after ``scripts/up.sh`` on an engine holding only what it built) is
tests/fresh/; here the sentence and the spawner's paths that must give it instead of an unhandled error.
"""

from __future__ import annotations

import asyncio

import pytest
from docker.errors import ImageNotFound
from tornado import web

from devdock_spawner import DevDockSpawner
from devdock_spawner.images import build_target, missing_image_message, repository
from tests.unit import fake_docker

BUILD_TARGETS = [
    ("desktop", "devdock/desktop:latest", "desktop"),
    ("hub-as-home-helper", "devdock/hub:latest", "hub"),
    ("gateway", "devdock/ssh-gateway:latest", "ssh-gateway"),
    ("untagged", "devdock/hub", "hub"),
    ("by-digest", "devdock/desktop@sha256:" + "0" * 64, "desktop"),
    ("registry-with-port", "registry.example.org:5000/devdock/hub:1.2", ""),
    ("someone-elses", "jupyter/base-notebook:latest", ""),
    ("look-alike", "devdock/hubx:latest", ""),
]


@pytest.mark.parametrize(("image", "target"), [row[1:] for row in BUILD_TARGETS], ids=[r[0] for r in BUILD_TARGETS])
def test_each_devdock_image_names_the_build_target_that_makes_it(image, target):
    assert build_target(image) == target


def test_repository_drops_only_the_tag():
    assert repository("registry.example.org:5000/devdock/hub:1.2") == "registry.example.org:5000/devdock/hub"
    assert repository("devdock/hub") == "devdock/hub"


def test_a_missing_devdock_image_says_what_it_is_for_and_the_build_command():
    text = missing_image_message("devdock/hub:latest", "it makes homes with a size limit")
    assert text == (
        "The image devdock/hub:latest is not available on this server: it makes homes with a size limit. "
        "An admin can build it with scripts/build-images.sh hub."
    )


def test_a_missing_image_of_a_site_says_pull_or_build_and_keeps_the_engines_words():
    text = missing_image_message("site/lab:3", "users' servers run it", "No such image: site/lab:3")
    assert text.startswith("The image site/lab:3 is not available on this server (No such image: site/lab:3)")
    assert text.endswith("An admin can pull it (docker pull site/lab:3) or build it.")


def test_a_profile_still_naming_the_retired_cuda_image_is_told_what_to_use_instead():
    text = missing_image_message("devdock/desktop-cuda:latest", "users' servers run it")
    assert text.startswith("The image devdock/desktop-cuda:latest is not available on this server: users' servers")
    assert "devdock no longer builds it: devdock/desktop serves GPU servers too (docs/gpu.md)" in text
    assert "docker pull" not in text and "build-images.sh desktop-cuda" not in text  # neither would work


def test_home_helper_image_missing_is_a_503_with_the_sentence_not_an_unhandled_error():
    spawner = fake_docker.make(
        DevDockSpawner, create_container=ImageNotFound("No such image: devdock/hub:latest"), username="alice"
    )
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(
            spawner.devdock_hub.one_shot(
                "devdock/hub:latest",
                ["devdock-home-image", "attach"],
                {},
                "home-image",
                "The home of alice could not be prepared",
                "it makes homes with a size limit (home_size)",
            )  # fmt: skip
        )
    assert raised.value.status_code == 503
    assert raised.value.log_message == (
        "The home of alice could not be prepared. The image devdock/hub:latest is not available on this server: it "
        "makes homes with a size limit (home_size). An admin can build it with scripts/build-images.sh hub."
    )
    assert spawner.docker.calls == ["create_container"]  # nothing was started, nothing to remove


def test_home_helper_runs_when_its_image_is_there():
    """Positive control: the same call with the image present runs the helper and returns its output."""
    spawner = fake_docker.make(
        DevDockSpawner,
        create_container={"Id": "helper"},
        start=None,
        wait={"StatusCode": 0},
        logs=b'{"device": "/dev/loop3", "created": true, "size": 1}\n',
        remove_container=None,
    )
    helper = spawner.devdock_hub.one_shot("devdock/hub:latest", ["true"], {}, "home-image", "failed", "it helps")
    out = asyncio.run(helper)
    assert '"created": true' in out
    assert spawner.docker.calls == ["create_container", "start", "wait", "logs", "remove_container"]


def test_desktop_image_missing_is_a_503_that_names_the_build_target():
    spawner = fake_docker.make(DevDockSpawner, username="alice")

    async def no_image(image):
        raise ImageNotFound(f"No such image: {image}")

    spawner.pull_image = no_image
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(spawner.check_image())
    assert raised.value.status_code == 503
    assert raised.value.log_message.startswith("The image devdock/desktop:latest is not available on this server")
    assert raised.value.log_message.endswith("An admin can build it with scripts/build-images.sh desktop.")


def test_a_refused_start_shows_its_sentence_on_the_users_page():
    """JupyterHub's error and spawn-pending pages show only ``jupyterhub_message`` of a failed start (else "Failed to
    start your server on the last attempt"): devdock's sentence must be there."""
    spawner = fake_docker.make(DevDockSpawner, username="alice")
    sentence = missing_image_message("devdock/hub:latest", "it makes homes with a size limit")

    async def refused():
        raise web.HTTPError(503, sentence)

    spawner._start = refused
    with pytest.raises(web.HTTPError) as raised:
        asyncio.run(spawner.start())
    assert raised.value.jupyterhub_message == sentence
