"""devdock's own images: which ``scripts/build-images.sh`` target builds each, and the sentence for one that is missing.

A server that cannot start because an image is not on the engine must say so to the user on the spawn page and to
the admin in the hub's log, with the one command that fixes it, never as an unhandled error (a newcomer's first
spawn after ``scripts/up.sh`` once failed with "500: Unhandled error" because the home helper's image was never
built). Pure: no Docker, no traitlets.
"""

from __future__ import annotations

#: Repository of each image ``scripts/build-images.sh`` builds (its default tags) -> the target that builds it.
BUILD_TARGETS = {
    "devdock/desktop": "desktop",
    "devdock/hub": "hub",
    "devdock/proxy": "proxy",
    "devdock/oidc": "oidc",
    "devdock/ssh-gateway": "ssh-gateway",
    "devdock/swarm-node": "swarm-node",
}

#: Images devdock built once and builds no more -> what to use instead (a site's profiles may still name them).
RETIRED = {
    "devdock/desktop-cuda": (
        "devdock no longer builds it: devdock/desktop serves GPU servers too (docs/gpu.md). An admin can name "
        "devdock/desktop:latest in the profile instead, or build an image with a framework FROM it "
        "(docs/howto/images.md)."
    ),
}


def repository(image: str) -> str:
    """``image`` without its tag or digest: ``devdock/hub:latest`` -> ``devdock/hub``.

    >>> repository("registry.example.org:5000/devdock/hub:1.2")
    'registry.example.org:5000/devdock/hub'
    """
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name[: len(name) - len(last)] + last.split(":", 1)[0]


def build_target(image: str) -> str:
    """The ``scripts/build-images.sh`` target that builds ``image`` under devdock's own name, or ``""``."""
    return BUILD_TARGETS.get(repository(image), "")


def missing_image_message(image: str, purpose: str, detail: str = "") -> str:
    """What a user and an admin read when ``image`` (which ``purpose``) is not on the engine.

    E.g. "The image devdock/hub:latest is not available on this server: it makes homes with a size limit. An admin
    can build it with scripts/build-images.sh hub."
    """
    target = build_target(image)
    fix = RETIRED.get(repository(image)) or (
        f"An admin can build it with scripts/build-images.sh {target}."
        if target
        else f"An admin can pull it (docker pull {image}) or build it."
    )
    where = f" ({detail})" if detail else ""
    return f"The image {image} is not available on this server{where}{': ' + purpose if purpose else ''}. {fix}"
