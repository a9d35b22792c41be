"""The desktop's OpenGL renderer choice, locale and keyboard layout, and its two views (noVNC, Selkies): settings,
profiles, validation (no engine)."""

from __future__ import annotations

import pytest
from traitlets import TraitError
from traitlets.config import Config

from devdock_spawner.profiles import load_profiles
from tests.unit.test_spawner import make_spawner


def test_desktop_gl_is_auto_by_default_and_locale_and_keyboard_are_the_images():
    env = make_spawner().desktop_environment()
    assert env["DEVDOCK_GL"] == "auto"
    assert "LANG" not in env and "DEVDOCK_KEYBOARD_LAYOUT" not in env  # the image's own (en_US.UTF-8, US) stay


def test_desktop_locale_and_keyboard_from_the_site_reach_the_environment():
    c = Config()
    c.DevDockSpawner.desktop_locale = "ja_JP.UTF-8"
    c.DevDockSpawner.desktop_keyboard_layout = "jp"
    c.DevDockSpawner.desktop_gl = "software"
    env = make_spawner(config=c).desktop_environment()
    assert {k: env[k] for k in ("DEVDOCK_GL", "LANG", "LC_ALL", "LANGUAGE", "DEVDOCK_KEYBOARD_LAYOUT")} == {
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


def test_selkies_is_offered_next_to_novnc_by_default_and_novnc_is_the_first_link():
    spawner = make_spawner()
    assert spawner.desktop_environment()["DEVDOCK_SELKIES"] == "1"
    spawner.desktop_views = spawner.desktop_views_for_spawn()
    assert spawner.desktop_links("/user/ann/") == [
        ("Desktop (noVNC)", "/user/ann/desktop/"),
        ("Desktop (Selkies, with sound)", "/user/ann/selkies/"),
    ]


def test_selkies_per_profile_can_be_the_default_view_or_switched_off_and_does_not_leak():
    fast, plain, off = load_profiles(
        [
            {"slug": "fast", "overrides": {"desktop_default_view": "selkies"}},
            {"slug": "plain"},
            {"slug": "off", "overrides": {"desktop_selkies": False}},
        ]
    )
    spawner = make_spawner()
    spawner._apply_profile(fast)
    assert spawner.desktop_views_for_spawn() == ["selkies", "novnc"]
    spawner._apply_profile(off)
    assert spawner.desktop_views_for_spawn() == ["novnc"]
    assert spawner.desktop_environment()["DEVDOCK_SELKIES"] == "0"  # the image then does not serve /selkies/
    spawner._apply_profile(plain)
    assert spawner.desktop_views_for_spawn() == ["novnc", "selkies"]
    assert spawner.desktop_environment()["DEVDOCK_SELKIES"] == "1"


def test_selkies_as_default_view_with_selkies_off_is_refused_in_a_profile_and_at_spawn():
    with pytest.raises(ValueError, match="desktop_default_view 'selkies' needs desktop_selkies on"):
        load_profiles([{"slug": "x", "overrides": {"desktop_default_view": "selkies", "desktop_selkies": False}}])
    c = Config()
    c.DevDockSpawner.desktop_selkies = False
    c.DevDockSpawner.desktop_default_view = "selkies"
    with pytest.raises(ValueError, match="desktop_selkies is off"):
        make_spawner(config=c).desktop_views_for_spawn()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"desktop_selkies": "yes"}, "desktop_selkies must be true or false"),
        ({"desktop_default_view": "rdp"}, "desktop_default_view must be one of"),
    ],
)
def test_selkies_profile_overrides_are_checked_when_the_list_loads(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_profiles([{"slug": "x", "overrides": overrides}])


def test_selkies_encoder_is_allow_listed_and_reaches_the_environment():
    spawner = make_spawner()
    assert spawner.desktop_environment()["DEVDOCK_SELKIES_ENCODER"] == "h264enc"
    spawner.desktop_selkies_encoder = "jpeg"
    assert spawner.desktop_environment()["DEVDOCK_SELKIES_ENCODER"] == "jpeg"
    with pytest.raises(TraitError):
        spawner.desktop_selkies_encoder = "h264enc --command-enabled=true"


def test_selkies_views_survive_a_hub_restart_in_the_state_and_go_with_the_stop():
    spawner = make_spawner()
    spawner.desktop_views = ["selkies", "novnc"]
    restored = make_spawner()
    restored.load_state(spawner.get_state())
    assert restored.desktop_views == ["selkies", "novnc"]
    restored.clear_state()
    assert restored.desktop_views == []
