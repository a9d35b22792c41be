"""The desktop part of DevDockSpawner: how its OpenGL renders, its language, its keyboard and its two ways in
(noVNC and Selkies) (a mixin).

What the desktop session does with these is in the image (``images/desktop/rootfs/opt/devdock/bin/devdock-gl-env``
and ``devdock-xstartup``); the spawner only decides and validates, so that a profile can choose too.
"""

from __future__ import annotations

from traitlets import Bool, CaselessStrEnum, Int, List, TraitError, Unicode, validate
from traitlets.config import LoggingConfigurable

from .desktop import ALLOWED, GL_MODES, SELKIES_ENCODERS, VIEWS, desktop_setting_problem


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

    desktop_selkies = Bool(
        True,
        config=True,
        help="""
        Offer Selkies as a second way into the same desktop session (``/selkies/``: H.264 or JPEG over one
        websocket, with the session's sound, a two-way clipboard and file upload), next to noVNC
        (``/desktop/``). Off: the server does not serve ``/selkies/`` at all. A profile may set its own
        (``overrides.desktop_selkies``). Default: on.
        """,
    )

    desktop_default_view = CaselessStrEnum(
        list(VIEWS),
        "novnc",
        config=True,
        help="""
        Which way into the desktop the hub's home page offers first: ``novnc`` (any browser, no sound) or
        ``selkies`` (faster, with sound; needs ``desktop_selkies``). A profile may set its own
        (``overrides.desktop_default_view``). Default: ``novnc``.
        """,
    )

    desktop_selkies_encoder = CaselessStrEnum(
        list(SELKIES_ENCODERS),
        "h264enc",
        config=True,
        help="""
        Selkies' video encoder: ``h264enc`` (H.264, on the GPU's NVENC where the server holds a GPU that has one,
        else in software; the choice is in ``~/.cache/devdock/selkies.log``) or ``jpeg`` (for browsers without
        H.264 decoding). Default: ``h264enc``.
        """,
    )

    desktop_prestart = Bool(
        True,
        config=True,
        help="""
        Start the desktop (TigerVNC and the XFCE session) when the server starts, at a lower CPU priority,
        instead of when the user first opens it: the desktop is there at the first click. Costs the
        desktop's memory (about 140 MiB) for users who never open it; set False on hosts short of memory.
        Skipped while the hub is busy starting many servers (see ``desktop_prestart_max_spawns``).
        Default: True.
        """,
    )

    desktop_prestart_max_spawns = Int(
        2,
        config=True,
        help="""
        Start the desktop early (``desktop_prestart``) only while at most this many servers are starting at
        once, this one included. When a class logs in together, every early desktop would take CPU from the
        other servers' starts; their desktops then start when first opened, as without prestart.
        Default: 2.
        """,
    )

    #: The ways into the running server's desktop, the default first (set at start, kept in the server's state).
    desktop_views = List(Unicode()).tag(state="run")

    @validate(*ALLOWED)
    def _check_allowed(self, proposal):
        value = proposal["value"].strip()
        problem = desktop_setting_problem(proposal["trait"].name, value)
        if problem:
            raise TraitError(problem)
        return value

    def get_env(self):
        env = super().get_env()
        env.update(self.desktop_environment())
        return env

    def desktop_environment(self) -> dict[str, str]:
        """The environment the desktop session reads (the image's scripts): renderer, language, keyboard."""
        env = {"DEVDOCK_DESKTOP_PRESTART": "1" if self._prestart_desktop() else "0", "DEVDOCK_GL": self.desktop_gl}
        if self.desktop_locale:
            env.update(LANG=self.desktop_locale, LC_ALL=self.desktop_locale, LANGUAGE=self.desktop_locale.split(".")[0])
        if self.desktop_keyboard_layout:
            env["DEVDOCK_KEYBOARD_LAYOUT"] = self.desktop_keyboard_layout
        env["DEVDOCK_SELKIES"] = "1" if self.desktop_selkies else "0"
        env["DEVDOCK_SELKIES_ENCODER"] = self.desktop_selkies_encoder
        return env

    def _prestart_desktop(self) -> bool:
        return self.desktop_prestart and self.devdock_hub.starting <= self.desktop_prestart_max_spawns

    def desktop_links(self, server_url: str) -> list[tuple[str, str]]:
        """(label, URL) of each way into the running server's desktop, the default first, for the home page."""
        labels = {"novnc": "Desktop (noVNC)", "selkies": "Desktop (Selkies, with sound)"}
        return [(labels[view], server_url + VIEWS[view]) for view in self.desktop_views if view in VIEWS]

    def desktop_views_for_spawn(self) -> list[str]:
        """The ways into this server's desktop, the default first (checked at each start: a profile may set both)."""
        if self.desktop_default_view == "selkies" and not self.desktop_selkies:
            raise ValueError("desktop_default_view is 'selkies' but desktop_selkies is off: turn one of them around")
        views = ["novnc", "selkies"] if self.desktop_selkies else ["novnc"]
        return sorted(views, key=lambda view: view != self.desktop_default_view)
