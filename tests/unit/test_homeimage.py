"""Sizes of homes with a limit, as an admin writes them (``home_size``), and the refusal of nonsense."""

from __future__ import annotations

import pytest
from traitlets import TraitError

from devdock_spawner import DevDockSpawner
from devdock_spawner.homeimage import parse_size


@pytest.mark.parametrize(
    "text, expected",
    [("20G", 20 * 2**30), ("512M", 512 * 2**20), ("1T", 2**40), ("64m", 64 * 2**20), ("10GiB", 10 * 2**30),
     (str(2**30), 2**30)],
)  # fmt: skip
def test_home_size_is_read_as_admins_write_it(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "20X", "-1G", "1.5G", "4M", ""])
def test_home_size_nonsense_or_too_small_is_refused_with_a_sentence(text):
    with pytest.raises(ValueError, match="size|small"):
        parse_size(text)


def test_home_size_is_checked_when_the_hub_reads_its_config():
    spawner = DevDockSpawner()
    spawner.home_size = "30G"  # positive control
    with pytest.raises(TraitError, match="not a size"):
        spawner.home_size = "thirty gigabytes"
    assert spawner.home_size == "30G"
