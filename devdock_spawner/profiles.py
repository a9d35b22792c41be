"""Profiles: the choices on the spawn form, and the validation of what users send (pure).

A profile, in the style of KubeSpawner's ``profile_list``::

    {
        "slug": "gpu-2",                     # what the form and the REST API send
        "display_name": "2 GPUs",
        "description": "For multi-GPU training",
        "default": False,
        "gpus": 2,                           # 0, N or "all"
        "gpu_ids": ["GPU-1234..."],          # optional: pin to these devices (uuids or indexes)
        "mig": "1g.18gb",                    # optional: MIG instances of this profile instead of whole GPUs
        "allowed_groups": ["vision-lab"],    # optional: only members of these hub groups see it
        "placement": ["node.labels.gpu-model == a100"],  # Swarm only: where the server may run
        "overrides": {"image": "site/desktop-torch:1", "mem_limit": "32G", "cpu_limit": 8},
        "idle_timeout": 3600,                # optional: seconds idle before the culler stops it
        "max_age": 86400,                    # optional: seconds of running at most (0: no limit)
    }

``user_options`` arrive from the form *and* from the REST API, which skips the form, so they are
re-validated here: only known keys, only strings where strings belong, only profiles the user may use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from .desktop import desktop_setting_problem
from .gpu import MIG_PROFILE, WHOLE, GPUsBusy
from .swarm import check_constraint

#: Spawner settings a profile may override (each spawn starts again from the site's configuration).
OVERRIDABLE = (
    "image",
    "mem_limit",
    "cpu_limit",
    "shm_size",
    "pids_limit",
    "home_size",
    "environment",
    "desktop_locale",
    "desktop_keyboard_layout",
    "desktop_gl",
    "desktop_selkies",
    "desktop_default_view",
)
#: Keys users may send in ``user_options``. SSH keys are not among them: they change only on the owner's
#: ``/hub/ssh`` page (a token that may start a server must not be able to add a key to it).
USER_OPTION_KEYS = ("profile",)
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PROFILE_KEYS = {
    "slug",
    "display_name",
    "description",
    "default",
    "gpus",
    "gpu_ids",
    "mig",
    "allowed_groups",
    "overrides",
    "placement",
    "idle_timeout",
    "max_age",
}


class InvalidOptions(ValueError):
    """``user_options`` that are refused; the message is meant for the user."""


@dataclass(frozen=True)
class Profile:
    slug: str
    display_name: str
    description: str = ""
    default: bool = False
    gpus: int | str = 0
    gpu_ids: tuple[str, ...] = ()
    #: MIG instances of this profile ("1g.18gb") instead of whole GPUs; "": whole GPUs
    mig: str = ""
    allowed_groups: tuple[str, ...] = ()
    overrides: dict = field(default_factory=dict)
    #: Swarm placement constraints (DevDockSwarmSpawner); a single engine has nowhere else to go
    placement: tuple[str, ...] = ()
    #: seconds without activity before the idle culler stops it; None: the site's default for its kind
    idle_timeout: int | None = None
    #: seconds a server may run at most; 0: no limit; None: the site's default for its kind
    max_age: int | None = None

    def allows(self, groups: set[str]) -> bool:
        return not self.allowed_groups or bool(set(self.allowed_groups) & groups)

    @property
    def gpu_kind(self) -> str:
        """What the allocator hands out for it: ``"gpu"`` (whole GPUs) or a MIG profile."""
        return self.mig or WHOLE

    @property
    def gpu_label(self) -> str:
        if self.mig:
            if self.gpus == "all":
                return f"all MIG {self.mig} GPU slices"
            return f"{self.gpus} MIG {self.mig} GPU slice{'s' if self.gpus != 1 else ''}"
        if self.gpus == "all":
            return "all GPUs"
        return {0: "no GPU", 1: "1 GPU"}.get(self.gpus, f"{self.gpus} GPUs")


DEFAULT_PROFILES = [{"slug": "desktop", "display_name": "Desktop", "description": "JupyterLab and a desktop, no GPU"}]


def load_profiles(profile_list: list[dict]) -> list[Profile]:
    """Check the site's ``profile_list`` once, with errors that name the profile and the problem."""
    profiles = []
    for number, entry in enumerate(profile_list or DEFAULT_PROFILES, 1):
        where = f"profile_list entry {number}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} must be a dict, not {type(entry).__name__}")
        unknown = set(entry) - _PROFILE_KEYS
        if unknown:
            raise ValueError(f"{where} has unknown keys {sorted(unknown)}; known: {sorted(_PROFILE_KEYS)}")
        slug = entry.get("slug", "")
        if not isinstance(slug, str) or not _SLUG.match(slug):
            raise ValueError(f"{where}: slug {slug!r} must match {_SLUG.pattern}")
        gpus = entry.get("gpus", 0)
        if gpus != "all" and not (isinstance(gpus, int) and not isinstance(gpus, bool) and 0 <= gpus <= 64):
            raise ValueError(f"{where} ({slug}): gpus must be 0..64 or 'all', not {gpus!r}")
        mig = entry.get("mig", "") or ""
        if mig and not (isinstance(mig, str) and MIG_PROFILE.match(mig)):
            raise ValueError(f"{where} ({slug}): mig must name a MIG profile such as '1g.18gb', not {mig!r}")
        if mig and not gpus:
            raise ValueError(f"{where} ({slug}): mig {mig!r} needs gpus (how many instances: 1 or more, or 'all')")
        overrides = entry.get("overrides", {}) or {}
        bad = set(overrides) - set(OVERRIDABLE)
        if bad:
            raise ValueError(f"{where} ({slug}): cannot override {sorted(bad)}; allowed: {list(OVERRIDABLE)}")
        for key in (name for name in OVERRIDABLE if name.startswith("desktop_")):
            problem = desktop_setting_problem(key, overrides[key]) if key in overrides else ""
            if problem:
                raise ValueError(f"{where} ({slug}): {problem}")
        if overrides.get("desktop_default_view") == "selkies" and overrides.get("desktop_selkies") is False:
            raise ValueError(f"{where} ({slug}): desktop_default_view 'selkies' needs desktop_selkies on")
        placement = entry.get("placement", []) or []
        if not isinstance(placement, list | tuple):
            raise ValueError(f"{where} ({slug}): placement must be a list of constraints, not {placement!r}")
        try:
            placement = tuple(check_constraint(c) for c in placement)
        except ValueError as e:
            raise ValueError(f"{where} ({slug}): {e}") from None
        limits = {}
        for key in ("idle_timeout", "max_age"):
            value = entry.get(key)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
                raise ValueError(f"{where} ({slug}): {key} must be a number of seconds (0 or more), not {value!r}")
            limits[key] = value
        profiles.append(
            Profile(
                slug=slug,
                display_name=str(entry.get("display_name", slug)),
                description=str(entry.get("description", "")),
                default=bool(entry.get("default", False)),
                gpus=gpus,
                gpu_ids=tuple(str(g) for g in entry.get("gpu_ids", ()) or ()),
                mig=mig,
                allowed_groups=tuple(entry.get("allowed_groups", ()) or ()),
                overrides=dict(overrides),
                placement=placement,
                **limits,
            )
        )
    slugs = [p.slug for p in profiles]
    duplicates = sorted({s for s in slugs if slugs.count(s) > 1})
    if duplicates:
        raise ValueError(f"profile_list has duplicate slugs: {duplicates}")
    return profiles


def visible_profiles(profiles: list[Profile], groups: set[str]) -> list[Profile]:
    return [p for p in profiles if p.allows(groups)]


def default_profile(profiles: list[Profile]) -> Profile:
    return next((p for p in profiles if p.default), profiles[0])


def validate_user_options(options, profiles: list[Profile], groups: set[str]) -> tuple[Profile, dict]:
    """``(profile, clean options)`` or :class:`InvalidOptions`. Never trusts the shape of ``options``."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise InvalidOptions("Spawn options must be a JSON object.")
    if "ssh_keys" in options:
        raise InvalidOptions(
            "SSH keys cannot be sent with a spawn request; add them on the hub's SSH keys page (/hub/ssh)."
        )
    unknown = sorted(str(k)[:40] for k in options if k not in USER_OPTION_KEYS)
    if unknown:
        raise InvalidOptions(f"Unknown spawn option(s) {unknown}; allowed: {list(USER_OPTION_KEYS)}.")
    clean: dict = {}
    visible = visible_profiles(profiles, groups)
    if not visible:
        raise InvalidOptions("No profile is available to you; ask an admin to add you to a group.")
    slug = options.get("profile")
    if slug is None or slug == "":
        profile = default_profile(visible) if any(p.default for p in visible) else visible[0]
    else:
        if not isinstance(slug, str) or len(slug) > 64:
            raise InvalidOptions("The profile must be given by its short name, e.g. 'desktop'.")
        matches = [p for p in visible if p.slug == slug]
        if not matches:
            choices = ", ".join(p.slug for p in visible)
            raise InvalidOptions(f"There is no profile {slug!r} you can use; choose one of: {choices}.")
        profile = matches[0]
    clean["profile"] = profile.slug
    return profile, clean


def form_rows(
    profiles: list[Profile],
    allocator,
    key: str,
    chosen: str | None,
    per_person: int = 0,
    in_line: Callable[[Profile], int] | None = None,
) -> list[dict]:
    """The spawn form's rows: each profile with its free/total GPUs, whether it can start now and why not.

    ``allocator`` is the hub's :class:`~devdock_spawner.gpu.GPUAllocator` (only asked, never changed); ``key``
    the server the form is for; ``chosen`` the profile of its last start, which stays selected while it can
    start. ``in_line``: how many starts wait for a profile's GPUs (None: starts do not wait, ``gpu_queue``
    off); a profile whose GPUs are taken can then still be chosen, and its row says that the start will wait
    (``wait``, ``waiting``). A pure function of its arguments, so that a site's own template gets the same rows
    (``profile_form_template``).
    """
    rows = []
    for p in profiles:
        kind = p.gpu_kind
        total = len(p.gpu_ids) if p.gpu_ids else allocator.total_of(kind)
        pinned = list(p.gpu_ids) or None
        problem = allocator.problem(p.gpus, pinned, key, per_person, kind) if p.gpus else None
        waiting = in_line(p) if in_line is not None and p.gpus else 0
        wait = in_line is not None and bool(p.gpus) and (isinstance(problem, GPUsBusy) or (not problem and waiting))
        refusal = "" if wait or problem is None else str(problem)
        free = allocator.free(key, kind)
        what = "GPUs" if kind == WHOLE else f"MIG {kind} GPU slices"
        reason = ""
        if wait:
            ahead = f" behind {waiting} other start{'s' if waiting != 1 else ''}" if waiting else ""
            reason = f"All these {what} are in use: your start waits in line{ahead} and goes on by itself at its turn."
        if refusal:
            if allocator.total_of(kind) == 0:
                reason = f"No {what} on this server."
            elif "per person" in refusal:
                reason = f"At most {per_person} GPUs per person, across your servers."
            else:
                reason = f"Not enough free {what} right now ({free} free)."
        rows.append(
            {
                "slug": p.slug,
                "display_name": p.display_name,
                "description": p.description,
                "gpus": p.gpus,
                "gpu_label": p.gpu_label,
                "free": free if not p.gpu_ids else total,
                "total": total,
                "available": not refusal,
                "reason": reason,
                "wait": wait,
                "waiting": waiting,
                "checked": False,
            }
        )
    # A profile that would wait is chosen only when the user chose it last time, or when nothing starts now.
    now = [r for r in rows if r["available"] and not r["wait"]]
    preferred = [r for r in rows if r["available"] and r["slug"] == chosen]
    preferred = preferred or [r for r, p in zip(rows, profiles, strict=True) if r in now and p.default]
    preferred = preferred or now or [r for r in rows if r["available"]]
    if preferred:
        preferred[0]["checked"] = True
    return rows
