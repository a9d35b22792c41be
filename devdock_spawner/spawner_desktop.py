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
#: The desktop settings a site or a profile may give, what each must look like, and an example of it.
ALLOWED = {"desktop_locale": (LOCALE, "de_DE.UTF-8"), "desktop_keyboard_layout": (KEYBOARD, "de")}
GL_MODES = ("auto", "software")


def desktop_setting_problem(name: str, value) -> str:
    """Why ``value`` cannot be the desktop setting ``name`` ("" when it can; empty means the default)."""
    if name == "desktop_gl":
        return "" if value in GL_MODES else f"desktop_gl must be 'auto' or 'software', not {value!r}"
    pattern, example = ALLOWED[name]
    if value == "" or (isinstance(value, str) and pattern.match(value)):
        return ""
    return f"{name} must look like {example!r}, not {value!r}"


class DesktopMixin(LoggingConfigurable):
    """OpenGL, locale and keyboard of the desktop session."""

    desktop_gl = CaselessStrEnum(
        list(GL_MODES),
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

    @validate(*ALLOWED)
    def _check_allowed(self, proposal):
        value = proposal["value"].strip()
        problem = desktop_setting_problem(proposal["trait"].name, value)
        if problem:
            raise TraitError(problem)
        return value

    def desktop_environment(self) -> dict[str, str]:
        """The environment the desktop session reads (the image's scripts): renderer, language, keyboard."""
        env = {"DEVDOCK_GL": self.desktop_gl}
        if self.desktop_locale:
            env.update(LANG=self.desktop_locale, LC_ALL=self.desktop_locale, LANGUAGE=self.desktop_locale.split(".")[0])
        if self.desktop_keyboard_layout:
            env["DEVDOCK_KEYBOARD_LAYOUT"] = self.desktop_keyboard_layout
        return env
