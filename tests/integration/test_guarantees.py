"""A site's own hub configuration with only ``spawner_class = "devdock"`` hears which of devdock's guarantees it lacks.

Real hubs (JupyterHub, configurable-http-proxy) started from a minimal configuration file of the site's kind: the
spawner class and what the harness needs to run and reach a hub (where it listens, its login, devdock's image and
network). Its log names every missing guarantee with the line that adds it; the same configuration plus devdock's
pages shows them on the admin page; devdock's own jupyterhub_config.py (the shared hub) shows none.
"""

from __future__ import annotations

from devdock_spawner.guarantees import log_text, missing_guarantees
from tests.harness import Hub

#: What the harness needs to run a hub, as a site's own file would say it (the environment is the harness's).
HARNESS_NEEDS = """
import os
c = get_config()
c.JupyterHub.spawner_class = "devdock"
# --- what the test harness needs to run and reach this hub, nothing of devdock's guarantees ---
c.JupyterHub.bind_url = os.environ["DEVDOCK_BIND_URL"]
c.JupyterHub.hub_ip = c.JupyterHub.hub_connect_ip = os.environ["DEVDOCK_HUB_IP"]
c.JupyterHub.hub_port = int(os.environ["DEVDOCK_HUB_PORT"])
c.ConfigurableHTTPProxy.api_url = os.environ["DEVDOCK_PROXY_API_URL"]
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = os.environ["DEVDOCK_DUMMY_PASSWORD"]
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True
c.JupyterHub.services = [{"name": "devdock-ops", "api_token": os.environ["DEVDOCK_SERVICE_TOKEN"]}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["devdock-ops"]}]
c.DevDockSpawner.image = os.environ["DEVDOCK_IMAGE"]
c.DevDockSpawner.network_name = os.environ["DEVDOCK_NETWORK"]
c.DevDockSpawner.prefix = os.environ["DEVDOCK_PREFIX"]
c.DevDockSpawner.hub_id = os.environ["DEVDOCK_HUB_ID"]
c.DevDockSpawner.allow_single_origin = True
"""
WARNING = "this hub's configuration lacks some of devdock's guarantees"


def _own_hub(make_hub, folder, extra: str = "") -> Hub:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "site_jupyterhub_config.py"
    config.write_text(HARNESS_NEEDS + extra)
    hub = make_hub(data_dir=folder, start=False, config=config)
    hub.start()
    return hub


def test_a_hub_with_only_the_spawner_class_says_in_its_log_what_it_lacks(make_hub, tmp_path):
    hub = _own_hub(make_hub, tmp_path / "own")
    try:
        session = hub.browser_session("admin")  # the hub makes the admin's devdock server object
        assert session.get(f"{hub.url}/hub/home", timeout=30).status_code == 200
        log = hub.log_tail(400)
        assert WARNING in log, log
        for line in (
            'c.JupyterHub.proxy_class = "devdock"',
            "from devdock_spawner.hubconfig import configure_culling; configure_culling(c)  # at the end",
            'c.DevDockSpawner.home_size = "50G"',
            "c.JupyterHub.cleanup_servers = False",
            "c.DevDockSpawner.gpu_max_per_user = 2",
            "from devdock_spawner import hub; hub.configure(c)",
        ):
            assert f"add: {line}" in log, line
        assert log.count(WARNING) == 1, "said once per hub"
        # Without devdock's pages there is no admin overview: the log's last line is how to get it.
        assert session.get(f"{hub.url}/hub/devdock/admin", timeout=30).status_code == 404
    finally:
        hub.stop()


def test_with_devdock_s_pages_the_admin_page_lists_what_the_configuration_lacks(make_hub, tmp_path, hub):
    own = _own_hub(make_hub, tmp_path / "pages", "from devdock_spawner import hub\nhub.configure(c)\n")
    try:
        page = own.browser_session("admin").get(f"{own.url}/hub/devdock/admin", timeout=30)
        assert page.status_code == 200
        assert 'id="devdock-guarantees"' in page.text
        assert page.text.count('class="devdock-guarantee"') == 5, page.text
        assert "c.JupyterHub.proxy_class = &#34;devdock&#34;" in page.text or 'proxy_class = "devdock"' in page.text
        assert "hub.configure(c)" not in page.text.split('id="devdock-guarantees"')[1].split("</div>")[0]
    finally:
        own.stop()
    # Positive control: devdock's own jupyterhub_config.py (the shared hub) lacks none, on the page or in the log.
    shipped = hub.browser_session("admin").get(f"{hub.url}/hub/devdock/admin", timeout=30)
    assert shipped.status_code == 200 and 'id="devdock-servers"' in shipped.text
    assert 'id="devdock-guarantees"' not in shipped.text
    assert WARNING not in hub.log_tail(100000)


def test_the_log_sentence_is_the_pure_function_s():
    from traitlets.config import Config

    c = Config()
    c.JupyterHub.spawner_class = "devdock"
    assert log_text(missing_guarantees(c)).startswith("devdock: " + WARNING)
