"""The desktop's OpenGL renderer choice, locale and keyboard layout: settings, profiles, validation (no engine)."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from devdock_spawner.profiles import load_profiles
from tests.unit.test_spawner import make_spawner


def test_desktop_gl_is_auto_by_default_and_locale_and_keyboard_are_the_images():
    env = make_spawner().desktop_environment()
    assert env == {"DEVDOCK_GL": "auto"}  # no LANG: the image's own (en_US.UTF-8) stays


def test_desktop_locale_and_keyboard_from_the_site_reach_the_environment():
    c = Config()
    c.DevDockSpawner.desktop_locale = "ja_JP.UTF-8"
    c.DevDockSpawner.desktop_keyboard_layout = "jp"
    c.DevDockSpawner.desktop_gl = "software"
    env = make_spawner(config=c).desktop_environment()
    assert env == {
        "DEVDOCK_GL": "software",
        "LANG": "ja_JP.UTF-8",
        "LC_ALL": "ja_JP.UTF-8",
        "LANGUAGE": "ja_JP",
        "DEVDOCK_KEYBOARD_LAYOUT": "jp",
    }


@pytest.mark.parametrize(
    ("trait", "value"),
    [
        ("desktop_locale", "de_DE.ISO-8859-1"),
        ("desktop_locale", "de_DE.UTF-8; rm -rf ~"),
        ("desktop_locale", "../../etc/passwd"),
        ("desktop_keyboard_layout", "de -option ctrl:nocaps"),
        ("desktop_keyboard_layout", "$(reboot)"),
        ("desktop_gl", "nvidia"),
    ],
)
def test_desktop_settings_outside_the_allow_list_are_refused(trait, value):
    with pytest.raises(TraitError):
        setattr(make_spawner(), trait, value)


@pytest.mark.parametrize("layout", ["us", "de", "fr(oss)", "us,ru", "de(nodeadkeys),us"])
def test_desktop_keyboard_layouts_and_variants_pass(layout):
    spawner = make_spawner()
    spawner.desktop_keyboard_layout = layout
    assert spawner.desktop_environment()["DEVDOCK_KEYBOARD_LAYOUT"] == layout


def test_desktop_locale_per_profile_applies_and_does_not_leak_into_the_next_spawn():
    c = Config()
    c.DevDockSpawner.desktop_locale = "en_GB.UTF-8"
    spawner = make_spawner(config=c)
    german, plain = load_profiles(
        [
            {"slug": "de", "overrides": {"desktop_locale": "de_DE.UTF-8", "desktop_keyboard_layout": "de"}},
            {"slug": "plain"},
        ]
    )
    spawner._apply_profile(german)
    assert spawner.desktop_environment()["LANG"] == "de_DE.UTF-8"
    assert spawner.desktop_environment()["DEVDOCK_KEYBOARD_LAYOUT"] == "de"
    spawner._apply_profile(plain)
    assert spawner.desktop_environment()["LANG"] == "en_GB.UTF-8"
    assert "DEVDOCK_KEYBOARD_LAYOUT" not in spawner.desktop_environment()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"desktop_locale": "klingon"}, "desktop_locale must look like 'de_DE.UTF-8'"),
        ({"desktop_keyboard_layout": "de; id"}, "desktop_keyboard_layout must look like 'de'"),
        ({"desktop_gl": "vulkan"}, "desktop_gl must be 'auto' or 'software'"),
    ],
)
def test_desktop_profile_overrides_are_checked_when_the_list_loads(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_profiles([{"slug": "x", "overrides": overrides}])
