"""JupyterHub configuration for devdock, driven by environment variables.

Every setting has a default that works for `scripts/up.sh` (hub on this host, user containers on the
local Docker engine); docker-compose.yml and the tests set the same variables. Variables:

  DEVDOCK_BIND_URL          public URL the proxy listens on           (http://127.0.0.1:8000)
  DEVDOCK_HUB_IP            address the hub API binds to; must be reachable from user containers
                            (default: the gateway of DEVDOCK_NETWORK, looked up via Docker)
  DEVDOCK_HUB_CONNECT_IP    address containers use to reach the hub    (DEVDOCK_HUB_IP)
  DEVDOCK_HUB_PORT          port of the hub API                        (8081)
  DEVDOCK_PROXY_API_URL     configurable-http-proxy's API              (http://127.0.0.1:8001)
  DEVDOCK_PROXY_EXTERNAL    1: the proxy runs as its own service; the hub does not start it
  DEVDOCK_SUBDOMAIN_HOST    e.g. https://hub.example.org: users' servers at alice.hub.example.org (a wildcard DNS
                            record and certificate)   (from DEVDOCK_PUBLIC_URL or DEVDOCK_BIND_URL; a loopback
                            address becomes localhost: alice.localhost, which browsers resolve by themselves)
  DEVDOCK_SINGLE_ORIGIN     1: every user's server on the hub's origin, unsafe: one user's page can act for
                            another (docs/security.md); the admin page says so in red      (0)
  DEVDOCK_NETWORK           Docker network of user containers          (devdock)
  DEVDOCK_ISOLATE           1: containers on it cannot reach each other (1; 0 when the hub is a container on it)
  DEVDOCK_IMAGE             desktop image                               (devdock/desktop:latest)
  DEVDOCK_PREFIX            prefix of container and volume names       (devdock)
  DEVDOCK_HUB_ID            this hub's name on its containers; hubs sharing an engine need different ones (devdock)
  DEVDOCK_AUTHENTICATOR     dummy | oauth (GenericOAuthenticator)      (dummy)
  With oauth, oauthenticator's own variables name the provider (all required): OAUTH2_AUTHORIZE_URL (what
  browsers open), OAUTH2_TOKEN_URL and OAUTH2_USERDATA_URL (what the hub calls), OAUTH_CLIENT_ID,
  OAUTH_CLIENT_SECRET; optional OAUTH_CALLBACK_URL, OAUTH2_BASIC_AUTH, OAUTH_TLS_VERIFY. And devdock's:
  DEVDOCK_PUBLIC_URL        URL users open (JupyterHub.public_url); with https:// every cookie is Secure; the
                            OAuth callback URL is derived from it (DEVDOCK_BIND_URL, 127.0.0.1 as localhost)
  DEVDOCK_OAUTH_SCOPE       space-separated scopes                     (openid profile email)
  DEVDOCK_OAUTH_USERDATA_FROM_ID_TOKEN  1: claims from the ID token; OAUTH2_USERDATA_URL not needed (0)
  DEVDOCK_OAUTH_USERNAME_CLAIM  claim that becomes the hub username   (preferred_username; email
                            is used only when the provider marks it email_verified)
  DEVDOCK_OAUTH_GROUPS_CLAIM    claim listing the user's groups; they become JupyterHub groups
                            (groups when allowed/admin groups are set, else off)
  DEVDOCK_OAUTH_ALLOWED_GROUPS  comma-separated groups whose members may log in
  DEVDOCK_OAUTH_ADMIN_GROUPS    comma-separated groups whose members are admins
  DEVDOCK_OAUTH_ALLOW_ALL   1: everyone the provider accepts may log in (0; then allowed users or groups
                            are required)
  DEVDOCK_OAUTH_LOGIN_SERVICE   name on the login button             (single sign-on)
  DEVDOCK_OAUTH_AUTO_LOGIN  1: /hub/login goes straight to the provider (1)
  DEVDOCK_OAUTH_DENIED_MESSAGE  page text for users who signed in but are not allowed
  DEVDOCK_DUMMY_PASSWORD    shared password of the dummy authenticator (required with dummy)
  DEVDOCK_ADMIN_USERS       comma-separated admin usernames            (admin with dummy; none with oauth)
  DEVDOCK_ALLOWED_USERS     comma-separated allowed usernames; empty means everyone who can log in
  DEVDOCK_SERVICE_TOKEN     API token of an admin service "devdock-ops", for automation (optional)
  DEVDOCK_METRICS_TOKEN     API token of a service "prometheus" that may only read /hub/metrics (optional)
  DEVDOCK_EXTRA_LABELS      extra container/volume labels, "key=value,key=value" (optional)
  DEVDOCK_DATA_DIR          where the hub keeps its database and cookie secret (current directory)
  DEVDOCK_SITE_DIR          the site's folder, outside the checkout: profiles.json and site_config.py (loaded
                            last) are read from it when present                         (/etc/devdock)
  DEVDOCK_PROFILES_FILE     the spawn form's profiles ({"profiles": [...]}); must exist when set
  DEVDOCK_SITE_CONFIG       a site configuration file loaded last; must exist when set
  DEVDOCK_SSH_PORTS         host port range for SSH, "42000-42999"
  DEVDOCK_SSH_BIND          address SSH ports are published on         (0.0.0.0)
  DEVDOCK_SSH_HOST          host name shown in ssh command lines       (this machine's FQDN)
  DEVDOCK_SSH_MODE          gateway (one port for everyone) | ports (one per server) | both   (ports)
  DEVDOCK_SSH_GATEWAY_TOKEN token of the SSH gateway's service (it may read keys and server addresses only)
  DEVDOCK_SSH_GATEWAY_PORT  the gateway's port, for the ~/.ssh/config block on /hub/ssh    (2222)
  DEVDOCK_SSH_GATEWAY_HOST  the gateway's host name                                      (DEVDOCK_SSH_HOST)
  DEVDOCK_SSH_GATEWAY_HOST_KEY  the gateway's public host key file, for known_hosts lines (optional)
  DEVDOCK_SSH_GATEWAY_AUTOSTART 1: connecting through the gateway starts a stopped server   (0)
  DEVDOCK_ACTIVITY_INTERVAL seconds between activity reports of servers                  (60)
  DEVDOCK_CULL              1: the idle culler runs (jupyterhub-idle-culler as service devdock-culler)  (1)
  DEVDOCK_CULL_TIMEOUT      seconds idle before a server without GPUs is stopped           (28800: 8 h)
  DEVDOCK_CULL_GPU_TIMEOUT  seconds idle before a server holding GPUs is stopped           (7200: 2 h)
  DEVDOCK_CULL_MAX_AGE      seconds a server without GPUs may run at most, 0: no limit     (0)
  DEVDOCK_CULL_GPU_MAX_AGE  seconds a server holding GPUs may run at most, 0: no limit     (259200: 3 days)
  DEVDOCK_CULL_GPU_CONTENTION_TIMEOUT  seconds idle before a GPU server is stopped while others wait for its
                            kind of GPU, 0: no shorter limit                                (1800: 30 min)
  DEVDOCK_CULL_WARNING      seconds before a stop that the user is warned                  (600)
  DEVDOCK_CULL_EVERY        seconds between the culler's rounds                           (60)
  DEVDOCK_GPU_PER_USER      GPUs one person may hold across all their servers, 0: no cap (2)
  DEVDOCK_GPU_QUEUE         1: a start waits in line when its GPUs are taken; 0: it is refused   (1)
  DEVDOCK_GPU_QUEUE_MAX_WAIT  seconds a start waits in line at most           (7200: 2 h)
  DEVDOCK_GPU_QUEUE_ORDER   fifo | fair-share (whoever used the GPUs least lately first)   (fifo)
  DEVDOCK_ACCOUNTING_URL    the accounting database (SQLAlchemy URL), "off": none  (SQLite in DEVDOCK_DATA_DIR)
  DEVDOCK_HOME_SIZE         size limit of new homes (docs/sharing.md); empty or 0: no limit    (50G)
  DEVDOCK_HOME_IMAGES_DIR   host folder of the homes' filesystem images        (/var/lib/devdock/homes)
  DEVDOCK_BLOCK_CLOUD_METADATA  1: users' containers cannot reach 169.254.169.254 (docs/security.md)  (1)
  DEVDOCK_LOCALE            the desktop's language, e.g. de_DE.UTF-8 (docs/desktop.md)  (the image's: en_US.UTF-8)
  DEVDOCK_KEYBOARD_LAYOUT   the desktop's XKB keyboard layout, e.g. de or fr(oss)     (the X server's: us)
  DEVDOCK_DESKTOP_GL        auto (the GPU when the server holds one) | software        (auto)
  DEVDOCK_NAMED_SERVERS     allow named servers (one container and home each): 1/0 (1)
  DEVDOCK_NAMED_SERVER_LIMIT  named servers per user                 (3)
  DEVDOCK_CLEANUP_SERVERS   stop user servers when the hub exits: 1/0   (0: servers outlive restarts)
  DEVDOCK_SPAWNER           devdock (one Docker engine) | devdock-swarm (a Swarm cluster)   (devdock)
  DEVDOCK_SWARM_PLACEMENT   Swarm: comma-separated placement constraints for every server (optional)
  DEVDOCK_SWARM_SSH_PUBLISH Swarm: host (SSH port on the server's node) | ingress (on every node)  (host)
  DEVDOCK_SWARM_VOLUME_DRIVER  Swarm: volume driver of shared homes; empty pins homes to nodes (optional)
  DEVDOCK_SWARM_IMAGE_BY_ID 1: services get the image by ID, nodes never ask a registry (0)
"""

import os
import pathlib
import sys

from devdock_spawner import hub as devdock_hub
from devdock_spawner.hubconfig import (
    SINGLE_ORIGIN_WARNING,
    ConfigError,
    admin_users,
    configure_culling,
    configure_oauth,
    env,
    env_flag,
    env_int,
    env_list,
    network_gateway,
    parse_labels,
    parse_port_range,
    read_profiles,
    site_files,
    user_origins,
)

c = get_config()  # noqa: F821  (provided by JupyterHub when it loads this file)

data_dir = env("DEVDOCK_DATA_DIR", os.getcwd())
network = env("DEVDOCK_NETWORK", "devdock")
site = site_files(env("DEVDOCK_SITE_DIR", "/etc/devdock"))

# --- the hub and its proxy ------------------------------------------------------------------------
spawner = env("DEVDOCK_SPAWNER", "devdock")
if spawner not in ("devdock", "devdock-swarm"):
    raise ConfigError(f"DEVDOCK_SPAWNER must be devdock (one engine) or devdock-swarm, not {spawner!r}")
swarm = spawner == "devdock-swarm"
c.JupyterHub.spawner_class = spawner
c.JupyterHub.bind_url = env("DEVDOCK_BIND_URL", "http://127.0.0.1:8000")
if swarm:
    # On Swarm the hub runs in a container attached to the users' overlay network (docs/scale-out.md):
    # it listens there, and servers reach it by its name or address on that network.
    hub_ip = env("DEVDOCK_HUB_IP", "0.0.0.0")
    if not env("DEVDOCK_HUB_CONNECT_IP"):
        raise ConfigError(
            "with DEVDOCK_SPAWNER=devdock-swarm, set DEVDOCK_HUB_CONNECT_IP to the hub's name or "
            "address on the overlay network DEVDOCK_NETWORK"
        )
else:
    hub_ip = env("DEVDOCK_HUB_IP") or network_gateway(network, env_flag("DEVDOCK_ISOLATE", True))
c.JupyterHub.hub_ip = hub_ip
c.JupyterHub.hub_connect_ip = env("DEVDOCK_HUB_CONNECT_IP", hub_ip)
c.JupyterHub.hub_port = env_int("DEVDOCK_HUB_PORT", 8081)
# Each user's server on its own origin (alice.localhost:8000 here, alice.hub.example.org on a site with a
# wildcard DNS record and certificate): a page one user's server serves can never act for another user on the
# hub's origin. DEVDOCK_SINGLE_ORIGIN=1 is the documented, unsafe opt-out (docs/security.md).
single_origin = env_flag("DEVDOCK_SINGLE_ORIGIN", False)
subdomain_host, public_url = user_origins(
    env("DEVDOCK_PUBLIC_URL") or c.JupyterHub.bind_url, env("DEVDOCK_SUBDOMAIN_HOST"), single_origin
)
c.DevDockSpawner.allow_single_origin = single_origin
if single_origin:
    print(f"[devdock] WARNING: {SINGLE_ORIGIN_WARNING}", file=sys.stderr)
else:
    c.JupyterHub.subdomain_host = subdomain_host
if env("DEVDOCK_PUBLIC_URL") or public_url != c.JupyterHub.bind_url:
    # The URL users open decides the scheme, not a guess from the request: behind a TLS front end (Caddy, a
    # load balancer) configurable-http-proxy appends its own hop to X-Forwarded-Proto ("https,http"), and
    # tornado reads the last entry, so the hub would think it is served over http. On this machine it is
    # http://localhost:<port>, whose subdomains browsers resolve to this machine.
    c.JupyterHub.public_url = public_url
    if public_url.startswith("https://"):
        # Every cookie Secure: the hub's own, its _xsrf cookie and the single-user servers' (JupyterHub hands
        # cookie_options on to them), so none is ever sent over plain http.
        c.JupyterHub.tornado_settings = {**c.JupyterHub.get("tornado_settings", {}), "cookie_options": {"secure": True}}
c.JupyterHub.db_url = "sqlite:///" + os.path.join(data_dir, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(data_dir, "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = env_flag("DEVDOCK_CLEANUP_SERVERS", False)
c.JupyterHub.allow_named_servers = env_flag("DEVDOCK_NAMED_SERVERS", True)
c.JupyterHub.named_server_limit_per_user = env_int("DEVDOCK_NAMED_SERVER_LIMIT", 3)
c.ConfigurableHTTPProxy.should_start = not env_flag("DEVDOCK_PROXY_EXTERNAL", False)
if env("DEVDOCK_PROXY_API_URL"):
    c.ConfigurableHTTPProxy.api_url = env("DEVDOCK_PROXY_API_URL")

# --- the spawner ----------------------------------------------------------------------------------
c.DevDockSpawner.image = env("DEVDOCK_IMAGE", "devdock/desktop:latest")
c.DevDockSpawner.network_name = network
c.DevDockSpawner.isolate_containers = env_flag("DEVDOCK_ISOLATE", True)
c.DevDockSpawner.prefix = env("DEVDOCK_PREFIX", "devdock")
c.DevDockSpawner.hub_id = env("DEVDOCK_HUB_ID", "devdock")
c.DevDockSpawner.extra_labels = parse_labels(env_list("DEVDOCK_EXTRA_LABELS"))
# A fair share of the GPUs: at most this many per person across all their servers (0: no cap).
c.DevDockSpawner.gpu_max_per_user = env_int("DEVDOCK_GPU_PER_USER", 2)
# When the GPUs are taken, a start waits in line (its place and an estimate on the spawn page; docs/gpu.md).
c.DevDockSpawner.gpu_queue = env_flag("DEVDOCK_GPU_QUEUE", True)
c.DevDockSpawner.gpu_queue_max_wait = env_int("DEVDOCK_GPU_QUEUE_MAX_WAIT", 2 * 3600)
c.DevDockSpawner.gpu_queue_order = env("DEVDOCK_GPU_QUEUE_ORDER", "fifo")
# Accounting of every server's run (docs/gpu.md): SQLite beside the hub's database unless a URL is given.
c.DevDockSpawner.accounting_url = env("DEVDOCK_ACCOUNTING_URL", "")
# Homes with a size limit: ext4 images on loop devices, made by a helper of the hub's image.
home_size = env("DEVDOCK_HOME_SIZE", "50G")
c.DevDockSpawner.home_size = "" if home_size in ("", "0") else home_size
c.DevDockSpawner.home_images_dir = env("DEVDOCK_HOME_IMAGES_DIR", "/var/lib/devdock/homes")
c.DevDockSpawner.home_helper_image = env("DEVDOCK_HUB_IMAGE", "devdock/hub:latest")
# The cloud's metadata service (the VM's credentials) is out of users' reach: an iptables rule in DOCKER-USER.
c.DevDockSpawner.block_cloud_metadata = env_flag("DEVDOCK_BLOCK_CLOUD_METADATA", True)
c.DevDockSpawner.firewall_helper_image = env("DEVDOCK_HUB_IMAGE", "devdock/hub:latest")
# The desktop: its language and keyboard (per profile too: overrides.desktop_locale / desktop_keyboard_layout).
c.DevDockSpawner.desktop_locale = env("DEVDOCK_LOCALE", "")
c.DevDockSpawner.desktop_keyboard_layout = env("DEVDOCK_KEYBOARD_LAYOUT", "")
c.DevDockSpawner.desktop_gl = env("DEVDOCK_DESKTOP_GL", "auto")
if site["profiles"]:
    print(f"[devdock] spawn form profiles from {site['profiles']}", file=sys.stderr)
    c.DevDockSpawner.profile_list = read_profiles(site["profiles"])
elif env("DEVDOCK_DEMO_PROFILES_FILE"):
    print(
        f"[devdock] the demo's profiles ({env('DEVDOCK_DEMO_PROFILES_FILE')}); put the site's own in "
        f"{env('DEVDOCK_SITE_DIR', '/etc/devdock')}/profiles.json",
        file=sys.stderr,
    )
    c.DevDockSpawner.profile_list = read_profiles(pathlib.Path(env("DEVDOCK_DEMO_PROFILES_FILE")))

# Idle culling (docs/sharing.md): how often servers report activity, in seconds (a minute by default, so the
# culler sees a stop of use within about a minute); SSH sessions and desktop input are checked twice as often.
# The proxy's own per-message activity is ignored (devdock_spawner.proxy): noVNC's traffic is not a person.
activity_interval = env_int("DEVDOCK_ACTIVITY_INTERVAL", 60)
c.DevDockSpawner.environment = {
    "JUPYTERHUB_ACTIVITY_INTERVAL": str(activity_interval),
    "DEVDOCK_SSH_ACTIVITY_INTERVAL": str(max(1, activity_interval // 2)),
}
c.JupyterHub.proxy_class = "devdock"
c.DevDockSpawner.cull_idle_timeout = env_int("DEVDOCK_CULL_TIMEOUT", 8 * 3600)
c.DevDockSpawner.cull_gpu_idle_timeout = env_int("DEVDOCK_CULL_GPU_TIMEOUT", 2 * 3600)
c.DevDockSpawner.cull_max_age = env_int("DEVDOCK_CULL_MAX_AGE", 0)
c.DevDockSpawner.cull_gpu_max_age = env_int("DEVDOCK_CULL_GPU_MAX_AGE", 3 * 24 * 3600)
c.DevDockSpawner.cull_gpu_contention_idle_timeout = env_int("DEVDOCK_CULL_GPU_CONTENTION_TIMEOUT", 1800)
c.DevDockSpawner.cull_warning = env_int("DEVDOCK_CULL_WARNING", 600)

# SSH: keys live with the hub; ports come from a range the firewall opens.
c.DevDockSpawner.ssh_keys_dir = os.path.join(data_dir, "ssh-keys")
c.DevDockSpawner.hub_data_dir = data_dir  # servers do not start when the database's disk is full
if env("DEVDOCK_SSH_PORTS"):
    c.DevDockSpawner.ssh_port_range = parse_port_range(env("DEVDOCK_SSH_PORTS"))
if env("DEVDOCK_SSH_BIND"):
    c.DevDockSpawner.ssh_bind_address = env("DEVDOCK_SSH_BIND")
if env("DEVDOCK_SSH_HOST"):
    c.DevDockSpawner.ssh_host = env("DEVDOCK_SSH_HOST")
# One port for everyone through the SSH gateway (images/ssh-gateway), per-server ports, or both.
c.DevDockSpawner.ssh_mode = env("DEVDOCK_SSH_MODE", "ports")
c.DevDockSpawner.ssh_gateway_port = env_int("DEVDOCK_SSH_GATEWAY_PORT", 2222)
if env("DEVDOCK_SSH_GATEWAY_HOST"):
    c.DevDockSpawner.ssh_gateway_host = env("DEVDOCK_SSH_GATEWAY_HOST")
c.DevDockSpawner.ssh_gateway_host_key_file = env("DEVDOCK_SSH_GATEWAY_HOST_KEY", "")
c.DevDockSpawner.ssh_gateway_autostart = env_flag("DEVDOCK_SSH_GATEWAY_AUTOSTART", False)

# Swarm: where servers may run, and how their SSH ports are published (see docs/scale-out.md).
if swarm:
    c.DevDockSwarmSpawner.placement_constraints = env_list("DEVDOCK_SWARM_PLACEMENT")
    c.DevDockSwarmSpawner.ssh_publish_mode = env("DEVDOCK_SWARM_SSH_PUBLISH", "host")
    c.DevDockSwarmSpawner.image_by_id = env_flag("DEVDOCK_SWARM_IMAGE_BY_ID", False)
    if env("DEVDOCK_SWARM_VOLUME_DRIVER"):
        c.DevDockSwarmSpawner.volume_driver = env("DEVDOCK_SWARM_VOLUME_DRIVER")

# devdock's hub pages: /hub/ssh (keys, ssh lines) and /hub/devdock/admin (servers, ports, GPUs).
devdock_hub.configure(c)

# --- who may log in -------------------------------------------------------------------------------
authenticator = env("DEVDOCK_AUTHENTICATOR", "dummy")
admins = admin_users(authenticator)
c.Authenticator.admin_users = admins
allowed = set(env_list("DEVDOCK_ALLOWED_USERS"))
if allowed:
    c.Authenticator.allowed_users = allowed | admins
else:
    c.Authenticator.allow_all = True

if authenticator == "dummy":
    if not env("DEVDOCK_DUMMY_PASSWORD"):
        raise ConfigError("set DEVDOCK_DUMMY_PASSWORD (the dummy authenticator's shared password)")
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = env("DEVDOCK_DUMMY_PASSWORD")
elif authenticator == "oauth":
    # Endpoints and the client come from oauthenticator's own variables; docs/deployment.md has the values
    # for common providers.
    configure_oauth(c, allowed)
else:
    raise ConfigError(f"DEVDOCK_AUTHENTICATOR must be 'dummy' or 'oauth', not {authenticator!r}")

# --- automation and monitoring --------------------------------------------------------------------
c.JupyterHub.services = []
c.JupyterHub.load_roles = []
service_token = env("DEVDOCK_SERVICE_TOKEN")
if service_token:
    c.JupyterHub.services.append({"name": "devdock-ops", "api_token": service_token})
    c.JupyterHub.load_roles.append({"name": "admin", "services": ["devdock-ops"]})
metrics_token = env("DEVDOCK_METRICS_TOKEN")
if metrics_token:
    # Prometheus scrapes /hub/metrics with this token, which may read metrics and nothing else.
    c.JupyterHub.services.append({"name": "prometheus", "api_token": metrics_token})
    c.JupyterHub.load_roles.append({"name": "prometheus", "scopes": ["read:metrics"], "services": ["prometheus"]})
gateway_token = env("DEVDOCK_SSH_GATEWAY_TOKEN")
if gateway_token:
    # The SSH gateway may ask who keeps a public key and where their servers' sshd is, and nothing else.
    c.JupyterHub.services.append({"name": "devdock-ssh-gateway", "api_token": gateway_token})
    c.JupyterHub.load_roles.append(
        {"name": "devdock-ssh-gateway", "scopes": [devdock_hub.GATEWAY_SCOPE], "services": ["devdock-ssh-gateway"]}
    )

# --- the site's own configuration, last: what it sets wins ----------------------------------------
if site["config"]:
    print(f"[devdock] loading the site configuration {site['config']}", file=sys.stderr)
    load_subconfig(str(site["config"]))  # noqa: F821  (provided by JupyterHub)

# The idle culler, with the profiles and limits the hub ends up with (the site's included); DEVDOCK_CULL=0: none.
configure_culling(c)
