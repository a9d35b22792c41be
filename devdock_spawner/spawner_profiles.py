"""The profiles part of DevDockSpawner: the site's profile list, the spawn form, applying a profile (a mixin).

The pure logic lives in profiles.py (checking the list, validating user_options, the form's rows).
"""

from __future__ import annotations

import copy
import os

import jinja2
from tornado import web
from traitlets import Dict, List, Unicode, default
from traitlets.config import LoggingConfigurable

from . import quota
from .accounting import utc_now
from .gpu import WHOLE
from .gpu_queue import line_name
from .profiles import OVERRIDABLE, Profile, form_rows, load_profiles, visible_profiles

TEMPLATES = os.path.join(os.path.dirname(__file__), "templates")


class ProfilesMixin(LoggingConfigurable):
    """The choices on the spawn form and what choosing one changes.

    Mixed into :class:`~devdock_spawner.spawner.DevDockSpawner`; asks its GPU part (``gpu_allocator``) what
    is free.
    """

    profile_list = List(
        Dict(),
        config=True,
        help="""
        The choices on the spawn form, in the style of KubeSpawner's ``profile_list``. Each entry:
        ``slug`` (what the form and the REST API send), ``display_name``, ``description``,
        ``default``, ``gpus`` (0, N or ``"all"``), ``gpu_ids`` (pin to these devices), ``mig`` (MIG instances
        of this profile, e.g. ``"1g.18gb"``, instead of whole GPUs),
        ``allowed_groups`` (hub groups that see it) and ``overrides`` (``image``, ``mem_limit``,
        ``cpu_limit``, ``shm_size``, ``pids_limit``, ``environment``). Example::

            [{"slug": "cpu", "display_name": "Desktop", "default": True},
             {"slug": "gpu", "display_name": "1 GPU", "gpus": 1, "overrides": {"mem_limit": "32G"}}]

        Default: one GPU-less "Desktop" profile (then no form is shown).
        """,
    )

    profile_form_template = Unicode(
        "",
        config=True,
        help="""
        A site's own spawn form: Jinja2 template text (autoescaped), in place of devdock's
        ``templates/devdock_form.html``, as KubeSpawner's trait of the same name. It gets ``profiles`` (rows
        with ``slug``, ``display_name``, ``description``, ``gpus``, ``gpu_label``, ``free``, ``total``,
        ``available``, ``reason``, ``checked``), ``gpu_total``, ``gpu_free``, ``gpu_kinds`` (``kind``, ``label``,
        ``free``, ``total`` for whole GPUs and each MIG profile), ``gpu_scope`` and ``quota_text``, and must post
        one field ``profile`` with the chosen slug. Whatever it posts is validated as before: a template
        cannot offer a profile the user may not use. Default: devdock's form.
        """,
    )

    def _profiles(self) -> list[Profile]:
        try:
            return load_profiles(self.profile_list)
        except ValueError as e:
            raise web.HTTPError(500, f"devdock's profile_list is misconfigured: {e}") from e

    def _groups(self) -> set[str]:
        return {g.name for g in getattr(self.user, "groups", []) or []}

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    async def _render_options_form(self, spawner=None) -> str:
        profiles = visible_profiles(self._profiles(), self._groups())
        if len(profiles) <= 1:
            return ""  # nothing to choose: the hub starts the server straight away
        allocator = await self.devdock_hub.gpu_allocator()
        key = self.server_key
        chosen = self.user_options.get("profile") if isinstance(self.user_options, dict) else None
        in_line = None
        if self.gpu_queue and self.devdock_hub.gpu_line:
            queue = self.devdock_hub.gpu_queue

            def in_line(profile):
                return len([w for w in queue.line(line_name(profile.gpu_kind, profile.gpu_ids)) if w.key != key])

        rows = form_rows(profiles, allocator, key, chosen, self.gpu_max_per_user, in_line)
        quota_text = self._quota_on_form(rows) if self.gpu_quotas else ""
        if self.profile_form_template:
            template = _templates().from_string(self.profile_form_template)
        else:
            template = _templates().get_template("devdock_form.html")
        kinds = [
            {
                "kind": kind,
                "label": "GPUs" if kind == WHOLE else f"MIG {kind} GPU slices",
                "free": allocator.free(key, kind),
                "total": allocator.total_of(kind),
            }
            for kind in allocator.kinds()
        ]
        return template.render(
            profiles=rows,
            gpu_total=allocator.total,
            gpu_free=allocator.free(key),
            gpu_kinds=kinds,
            gpu_scope=self.devdock_hub.gpu_scope,
            quota_text=quota_text,
        )

    def _quota_on_form(self, rows: list[dict]) -> str:
        """What is left of the user's GPU-hours; with none left, the GPU profiles cannot be chosen."""
        rule, used = self.gpu_quota()
        if rule is None:
            return ""
        refusal = quota.refusal(rule, used, 1, utc_now())
        if refusal and self.gpu_quota_exceeded == "wait" and self.gpu_queue and self.devdock_hub.gpu_line:
            return (
                f"{quota.left_words(rule, used)} Past your quota a GPU start still may wait: behind everyone within "
                "theirs, until nobody within quota waits for those GPUs."
            )
        if refusal:
            for row in rows:
                if row["gpus"]:
                    row.update(available=False, wait=False, checked=False, reason="Your GPU-hours are used up.")
            if not any(r["checked"] for r in rows):
                for row in rows:
                    if row["available"]:
                        row["checked"] = True
                        break
            return refusal
        return quota.left_words(rule, used)

    @default("options_from_form")
    def _default_options_from_form(self):
        def options_from_form(formdata):
            return {"profile": formdata.get("profile", [""])[0]}

        return options_from_form

    _configured: dict | None = None

    def _apply_profile(self, profile: Profile) -> None:
        """Start from the site's configuration, then apply the profile: nothing leaks between spawns."""
        if self._configured is None:
            self._configured = {name: copy.deepcopy(getattr(self, name)) for name in OVERRIDABLE}
        for name, value in self._configured.items():
            setattr(self, name, copy.deepcopy(value))
        for name, value in profile.overrides.items():
            if name == "environment":
                value = {**self._configured["environment"], **value}
            setattr(self, name, copy.deepcopy(value))


_jinja: jinja2.Environment | None = None


def _templates() -> jinja2.Environment:
    """devdock's jinja2 templates (autoescaped), loaded on first use."""
    global _jinja
    if _jinja is None:
        _jinja = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    return _jinja
