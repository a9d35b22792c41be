"""The desktop's settings, decided without Docker: what a site or a profile may give (pure, tested from tables).

The spawner's desktop part (spawner_desktop.py) and the profiles (profiles.py) both check settings here; what the
desktop session does with them is in the image (``devdock-gl-env``, ``devdock-xstartup``).
"""

from __future__ import annotations

import re

#: ``de_DE.UTF-8``, ``zh_CN.UTF-8``, ``C.UTF-8``: the UTF-8 locales glibc can make (the image makes one it lacks).
LOCALE = re.compile(r"^([a-z]{2,3}_[A-Z]{2}(@[a-z]+)?|C)\.UTF-8$")
#: ``us``, ``de``, ``de(nodeadkeys)``, ``us,ru``: XKB layouts, with an optional variant each.
KEYBOARD = re.compile(r"^[a-z]{2,12}(\([a-z0-9_-]{1,24}\))?(,[a-z]{2,12}(\([a-z0-9_-]{1,24}\))?){0,3}$")
#: The desktop settings a site or a profile may give, what each must look like, and an example of it.
ALLOWED = {"desktop_locale": (LOCALE, "de_DE.UTF-8"), "desktop_keyboard_layout": (KEYBOARD, "de")}
GL_MODES = ("auto", "software")
#: The two ways into the same desktop session, and the path of each under the server's URL.
VIEWS = {"novnc": "desktop/", "selkies": "selkies/"}
#: Selkies' encoders devdock offers: H.264 (NVENC on a GPU that has one, else x264) or JPEG (any browser).
SELKIES_ENCODERS = ("h264enc", "jpeg")


def desktop_setting_problem(name: str, value) -> str:
    """Why ``value`` cannot be the desktop setting ``name`` ("" when it can; empty means the default)."""
    if name == "desktop_gl":
        return "" if value in GL_MODES else f"desktop_gl must be 'auto' or 'software', not {value!r}"
    if name == "desktop_selkies":
        return "" if isinstance(value, bool) else f"desktop_selkies must be true or false, not {value!r}"
    if name == "desktop_default_view":
        return "" if value in VIEWS else f"desktop_default_view must be one of {sorted(VIEWS)}, not {value!r}"
    pattern, example = ALLOWED[name]
    if value == "" or (isinstance(value, str) and pattern.match(value)):
        return ""
    return f"{name} must look like {example!r}, not {value!r}"
