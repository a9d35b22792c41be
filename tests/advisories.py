"""Security advisories of devdock's dependencies, with the first version that fixes each.

Written out from the packages' own security notes (CHANGELOG.md "Security" names them too), never read from
pyproject.toml or the image's pins: a floor lowered by mistake, or an image pin left behind, fails the tests.
"""

# (package, advisory, first fixed version)
ADVISORIES = [
    ("jupyterhub", "CVE-2026-40864 XSRF bypass with Sec-Fetch-Mode: no-cors", "5.4.5"),
    ("jupyterhub", "CVE-2026-54338 unauthenticated DoS through logged usernames", "5.5.0"),
    ("jupyterhub", "GHSA-69wv-m5fw-2fhp filtered admin roles not enforced", "5.5.1"),
    ("jupyterhub", "GHSA-mj6q-mp44-53v8 share scopes after a rename", "5.5.2"),
    ("jupyterhub", "GHSA-hx46-2cv3-mh6g spawner-options DoS (and five more in 6.1.0)", "6.1.0"),
    ("tornado", "CVE-2024-52804 quadratic cookie parsing", "6.4.2"),
    ("tornado", "CVE-2025-47287 multipart log flood", "6.5.0"),
    ("tornado", "CVE-2025-67725 quadratic repeated headers", "6.5.3"),
    ("tornado", "CVE-2026-31958 too many multipart parts", "6.5.5"),
    ("tornado", "CVE-2026-49853 auth headers kept on cross-origin redirects", "6.5.6"),
    ("tornado", "CVE-2026-82397 unlimited urlencoded fields", "6.5.8"),
    ("tornado", "6.6.1 open redirects and percent-decoding DoS", "6.6.1"),
    ("oauthenticator", "CVE-2026-33175 unverified e-mail becomes the username", "17.4.0"),
    ("dockerspawner", "CVE-2023-48311 user_options choose the image", "13.0.0"),
    ("jinja2", "CVE-2025-27516 sandbox escape through |attr", "3.1.6"),
    ("requests", "CVE-2026-25645 temporary file reuse", "2.33.0"),
    ("urllib3", "CVE-2026-97687 proxy TLS settings ignored", "2.8.0"),
    ("pyjwt", "GHSA-42vr-xj54-vc7v RecursionError DoS", "2.15.0"),
    ("cryptography", "CVE-2026-69247 (OpenSSL in wheels)", "50.0.0"),
]

# Pins of the desktop image (images/desktop/requirements.txt): the single-user side.
IMAGE_ADVISORIES = [
    ("jupyterhub", "CVE-2026-40864 and the 6.1.0 releases", "6.1.0"),
    ("jupyterlab", "CVE-2026-73415 image-viewer XSS", "4.6.2"),
    ("jupyter-server", "CVE-2026-44727 nbconvert stored XSS; works with tornado 6.5.9+", "2.21.1"),
    ("jupyter-server-proxy", "CVE-2024-35225 reflected XSS on /proxy", "4.2.0"),
    ("jupyter-remote-desktop-proxy", "CVE-2025-32428 TigerVNC on TCP", "3.0.1"),
    ("tornado", "6.6.1 open redirects and percent-decoding DoS", "6.6.1"),
]

# Selkies' venv in the desktop image (images/desktop/selkies-requirements.txt): its web server and image code.
SELKIES_ADVISORIES = [
    ("aiohttp", "CVE-2026-34515 and nine more fixed in 3.13.4", "3.13.4"),
    ("aiohttp", "GHSA-4fvr-rgm6-gqmc pipelined requests queued without limit", "3.14.1"),
    ("pillow", "CVE-2025-48379 DDS heap overflow", "11.3.0"),
    ("cryptography", "CVE-2026-69247 (OpenSSL in wheels)", "50.0.0"),
]
