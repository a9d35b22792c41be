"""Every image the docs and examples name is one CI builds: a doc that names an image nobody can build fails here.

CI (``.ci/run`` -> ``scripts/test.sh``) builds the images of one ``scripts/build-images.sh`` line, from the base that
``scripts/base-image.sh`` makes on machines without a registry (``debian:bookworm-slim``). A devdock image a page or
an example names must be one of those, or a site's own image whose recipe the same page shows ``FROM`` one of those
(as docs/howto/images.md's PyTorch image). The CUDA variant this replaces was named in docs, examples and the
compose GPU override, started from an Ubuntu base on which its recipe cannot install ``firefox-esr``, and was never
built by CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from devdock_spawner.images import BUILD_TARGETS, repository
from tests.harness import ROOT

BASE = "debian:bookworm-slim"
#: What a page or an example may say: docs (reference pages included), examples, the README.
PAGES = sorted(
    [*ROOT.glob("docs/**/*.md"), *(p for p in ROOT.glob("examples/**/*") if p.is_file()), ROOT / "README.md"]
)
#: An image of devdock's: devdock/<name>, not inside a path or a URL (/etc/devdock/..., /hub/devdock/admin).
IMAGE = re.compile(r"(?<![\w/.])devdock/([a-z0-9][a-z0-9._-]*)(?::[\w.-]+)?")
BUILD_CALL = re.compile(
    r"^([ \t]*(?:\$[ \t]+|time[ \t]+|sudo[ \t]+|\w+=\S*[ \t]+)*)?.*?scripts/build-images\.sh([^\n#`)]*)", re.M
)
SITE_BUILD = re.compile(r"docker build\b[^\n]*?-t[ \t]+(\S+)")
BASE_NAMED = re.compile(r"BASE_IMAGE(?:=|:[ \t]*(?:\$\{\w+:-)?)([^\s`\"'}]+)")
#: A settings table's row of the base: every image:tag it names.
BASE_ROW = re.compile(r"^\|[ \t]*`BASE_IMAGE`.*$", re.M)


def ci_targets() -> list[str]:
    """The targets of the one build-images.sh line in scripts/test.sh."""
    (line,) = re.findall(r"^\s*(?:time\s+)?scripts/build-images\.sh\s+([^\n#]+)$", _text("scripts/test.sh"), re.M)
    return line.split()


def known_targets() -> list[str]:
    """What build-images.sh says it builds (its "unknown image" sentence lists them)."""
    (known,) = re.findall(r"\(known: ([a-z, -]+)\)", _text("scripts/build-images.sh"))
    return [t.strip() for t in known.split(",")]


def case_labels() -> set[str]:
    """Every word build-images.sh's case accepts (including one that only says it is gone)."""
    labels = re.findall(r"^\s*([a-z][a-z| -]*)\)", _text("scripts/build-images.sh"), re.M)
    return {w.strip() for label in labels for w in label.split("|")}


def _text(relative: str) -> str:
    return (ROOT / relative).read_text()


def problems(name: str, text: str, built: set[str]) -> list[str]:
    """What ``text`` (page ``name``) names that CI does not build, in sentences; empty when everything is built."""
    found = []
    site_images = {repository(t) for t in SITE_BUILD.findall(text)}
    bases = {repository(m.group(1)) for m in re.finditer(r"^\s*FROM\s+(\S+)", text, re.M)}
    site_ok = any(BUILD_TARGETS.get(b) in built for b in bases)
    for match in IMAGE.finditer(text):
        repo = repository(match.group(0))
        if BUILD_TARGETS.get(repo) in built:
            continue
        if repo in site_images and site_ok:
            continue  # a site's image, whose recipe here starts FROM an image CI builds
        found.append(f"{name} names {match.group(0)}, which no target of scripts/test.sh's build builds")
    labels = case_labels()
    for match in BUILD_CALL.finditer(text):
        # A command line (the script first on its line) runs every word after it; in a sentence or a comment, a
        # word the script takes as a target is one too.
        command = match.group(0)[len(match.group(1) or "") :].startswith("scripts/build-images.sh")
        for word in match.group(2).split():
            if (command or word in labels) and word not in built:
                found.append(f"{name} runs scripts/build-images.sh {word}, which CI does not build")
            if not command and word not in labels:
                break
    bases = [m.group(1) for m in BASE_NAMED.finditer(text)]
    bases += [b for row in BASE_ROW.findall(text) for b in re.findall(r"`([\w./-]+:[\w.-]+)`", row)]
    for base in bases:
        if base not in (BASE, "$base", "${BASE_IMAGE}"):
            found.append(f"{name} names the base {base}: CI builds from {BASE} only")
    return found


def test_every_target_build_images_sh_knows_is_built_by_ci():
    known, built = known_targets(), ci_targets()
    assert sorted(known) == sorted(built), (known, built)
    script = _text("scripts/build-images.sh")
    for target in known:
        assert re.search(rf"^\s*(?:[a-z-]+ \| )*{re.escape(target)}(?: \| [a-z-]+)*\)", script, re.M), target
    # and each devdock image the spawner knows comes from one of them (its "build it with" sentence names it)
    assert set(BUILD_TARGETS.values()) == set(built)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_image_a_page_or_example_names_is_built_by_ci(page):
    text = page.read_text(errors="replace")
    assert problems(str(page.relative_to(ROOT)), text, set(ci_targets())) == []


def test_every_compose_build_starts_from_the_base_ci_makes():
    files = [ROOT / "docker-compose.yml", *ROOT.glob("examples/**/*.yml")]
    builds = 0
    for path in files:
        for name, service in (yaml.safe_load(path.read_text()).get("services") or {}).items():
            if "build" not in service:
                continue
            builds += 1
            base = str(service["build"].get("args", {}).get("BASE_IMAGE", BASE))
            assert base in (BASE, f"${{BASE_IMAGE:-{BASE}}}"), f"{path.name}:{name} builds from {base}"
            assert BUILD_TARGETS.get(repository(re.sub(r"\$\{\w+:-([^}]+)\}", r"\1", service["image"]))), name
    assert builds >= 5  # positive control: the stack's own builds were read


# The check itself, on what the docs said before the one image for CPU and GPU servers: each line is caught.
OLD = [
    ("build-call", "scripts/build-images.sh desktop-cuda   # the CUDA variant (needs a registry with nvidia/cuda)"),
    ("profile-image", '"overrides": { "image": "devdock/desktop-cuda:latest", "cpu_limit": 8 }'),
    ("compose-image", "    image: ${DEVDOCK_CUDA_IMAGE:-devdock/desktop-cuda:latest}"),
    ("compose-base", "        BASE_IMAGE: ${CUDA_BASE_IMAGE:-nvidia/cuda:12.6.3-runtime-ubuntu24.04}"),
    (
        "docs-table",
        "| `BASE_IMAGE` | `debian:bookworm-slim` | the base; `nvidia/cuda:12.6.3-runtime-ubuntu24.04` gives ...",
    ),
    ("build-arg", "  --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04 -t devdock/desktop-cuda images/"),
    ("site-image-not-from-devdock", "FROM ubuntu:24.04\n...\ndocker build -t devdock/desktop-x:1 images/x\n"),
]


@pytest.mark.parametrize("text", [t for _, t in OLD], ids=[i for i, _ in OLD])
def test_a_page_naming_an_image_ci_does_not_build_is_caught(text):
    assert problems("old.md", text, set(ci_targets()))


def test_what_ci_builds_and_a_site_recipe_from_it_pass():
    # Positive control for the check above: the same kinds of lines, naming what CI builds, pass.
    ok = (
        "scripts/build-images.sh desktop hub\n"
        '"overrides": {"image": "devdock/desktop:latest"}\n'
        "| `BASE_IMAGE` | `debian:bookworm-slim` | the base |\n"
        "FROM devdock/desktop:latest\nRUN pip install torch\ndocker build -t devdock/desktop-torch:1 images/t\n"
    )
    assert problems("ok.md", ok, set(ci_targets())) == []


def test_pages_were_read():
    names = {str(p.relative_to(ROOT)) for p in PAGES}
    assert {"docs/gpu.md", "docs/howto/images.md", "examples/compose-override/gpu.yml", "README.md"} <= names
    assert isinstance(PAGES[0], Path)
