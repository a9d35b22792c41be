"""The desktop part of DevDockSpawner: how its OpenGL renders, its language and its keyboard (a mixin).

What the desktop session does with these is in the image (``images/desktop/rootfs/opt/devdock/bin/devdock-gl-env``
and ``devdock-xstartup``); the spawner only decides and validates, so that a profile can choose too.
"""

from __future__ import annotations

import re

from traitlets import CaselessStrEnum, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

#: ``de_DE.UTF-8``, ``zh_CN.UTF-8``, ``C.UTF-8``: the UTF-8 locales glibc can make (the image makes one it lacks).
LOCALE = re.compile(r"^([a-z]{2,3}_[A-Z]{2}(@[a-z]+)?|C)\.UTF-8$")
#: ``us``, ``de``, ``de(nodeadkeys)``, ``us,ru``: XKB layouts, with an optional variant each.
KEYBOARD = re.compile(r"^[a-z]{2,12}(\([a-z0-9_-]{1,24}\))?(,[a-z]{2,12}(\([a-z0-9_-]{1,24}\))?){0,3}$")


class DesktopMixin(LoggingConfigurable):
    """OpenGL, locale and keyboard of the desktop session."""

    desktop_gl = CaselessStrEnum(
        ["auto", "software"],
        "auto",
        config=True,
        help="""
        How OpenGL programs in the desktop render. ``auto``: on the server's GPU when it holds one whose driver
        offers Vulkan (Mesa's Zink over NVIDIA's Vulkan driver, headless: no X server on the GPU, no privileged
        container; the container gets NVIDIA's ``graphics`` capability only with a GPU), else with Mesa's software
        renderer (llvmpipe). ``software``: always the software renderer. The session logs its choice in
        ``~/.cache/devdock/desktop-gl.log``. Default: ``auto``.
        """,
    )

    desktop_locale = Unicode(
        "",
        config=True,
        help="""
        The language of the desktop, terminals and SSH sessions (``LANG``), e.g. ``"de_DE.UTF-8"``; a UTF-8 locale
        the image does not have is made when the server starts. A profile may set its own
        (``overrides.desktop_locale``). Empty: the image's (``en_US.UTF-8`` in devdock's). ``DEVDOCK_LOCALE`` in
        devdock's config.
        """,
    )

    desktop_keyboard_layout = Unicode(
        "",
        config=True,
        help="""
        The desktop's XKB keyboard layout, e.g. ``"de"``, ``"fr(oss)"`` or ``"us,ru"`` (layouts with an optional
        variant). A profile may set its own (``overrides.desktop_keyboard_layout``). Empty: the X server's (US).
        ``DEVDOCK_KEYBOARD_LAYOUT`` in devdock's config.
        """,
    )

    @validate("desktop_locale")
    def _check_locale(self, proposal):
        value = proposal["value"].strip()
        if value and not LOCALE.match(value):
            raise TraitError(f"desktop_locale {value!r} is not a UTF-8 locale such as 'de_DE.UTF-8'")
        return value

    @validate("desktop_keyboard_layout")
    def _check_keyboard(self, proposal):
        value = proposal["value"].strip()
        if value and not KEYBOARD.match(value):
            raise TraitError(f"desktop_keyboard_layout {value!r} is not an XKB layout such as 'de' or 'fr(oss)'")
        return value

    def desktop_environment(self) -> dict[str, str]:
        """The environment the desktop session reads (the image's scripts): renderer, language, keyboard."""
        env = {"DEVDOCK_GL": self.desktop_gl}
        if self.desktop_locale:
            env.update(LANG=self.desktop_locale, LC_ALL=self.desktop_locale, LANGUAGE=self.desktop_locale.split(".")[0])
        if self.desktop_keyboard_layout:
            env["DEVDOCK_KEYBOARD_LAYOUT"] = self.desktop_keyboard_layout
        return env
