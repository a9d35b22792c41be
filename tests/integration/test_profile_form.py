"""A site's own spawn form (``profile_form_template``) on the real hub: its markup is what users get, with
devdock's rows, and what it posts is still validated."""

from __future__ import annotations

import html
import re

import pytest

from tests.harness import xsrf_from

PROFILES = [
    {"slug": "small", "display_name": "Small desktop", "default": True},
    {"slug": "large", "display_name": "Large desktop", "overrides": {"mem_limit": "4G"}},
    {"slug": "staff", "display_name": "Staff only", "allowed_groups": ["staff"]},
]
# A site's template: a list instead of devdock's radio buttons, with the same rows and the same field name.
TEMPLATE = """
<ul class="site-profiles">
{% for p in profiles %}
  <li><label><input type="radio" name="profile" value="{{ p.slug }}" {% if p.checked %}checked{% endif %}>
  <span class="site-name">{{ p.display_name }}</span></label></li>
{% endfor %}
</ul>
"""


@pytest.fixture(scope="module")
def form_hub(make_hub):
    extra = f"c.DevDockSpawner.profile_list = {PROFILES!r}\nc.DevDockSpawner.profile_form_template = {TEMPLATE!r}\n"
    return make_hub("form", extra_config=extra)


def test_a_sites_own_spawn_form_template_replaces_devdocks_and_its_posts_are_still_checked(form_hub):
    hub = form_hub
    session = hub.browser_session("fay")
    page = session.get(f"{hub.url}/hub/spawn/fay", timeout=30).text
    assert '<ul class="site-profiles">' in page and "devdock-profiles" not in page
    names = re.findall(r'<span class="site-name">([^<]*)</span>', page)
    assert names == ["Small desktop", "Large desktop"]  # the rows devdock built: staff's profile is not shown
    assert 'value="small" checked' in page
    # A post for a profile the user may not use is refused, whatever the template offered.
    forged = session.post(f"{hub.url}/hub/spawn/fay", data={"profile": "staff", "_xsrf": xsrf_from(page)}, timeout=60)
    assert forged.status_code == 400
    assert "There is no profile 'staff' you can use" in html.unescape(forged.text)
    assert '<ul class="site-profiles">' in forged.text  # the form comes back in the site's markup
    assert hub.container("fay") is None
    # Positive control: the template's choice starts the server with that profile.
    r = session.post(f"{hub.url}/hub/spawn/fay", data={"profile": "large", "_xsrf": xsrf_from(page)}, timeout=120)
    assert r.status_code == 200, r.text[-500:]
    hub.wait_ready("fay")
    assert hub.container("fay").attrs["HostConfig"]["Memory"] == 4 * 1024**3
    hub.stop_server("fay")
