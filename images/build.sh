#!/bin/sh
# Build steps shared by every devdock image, as shell functions.
#
# Dockerfiles call this script with the name of one step: `build.sh <step> [args...]`.
# Each step is idempotent and leaves no apt lists or pip caches behind, so layers stay small.
# Settings arrive as environment variables from the Dockerfile's build args:
#   APT_MIRROR      e.g. http://mirror.example.org/debian   (empty: keep the base image's sources)
#   PIP_INDEX_URL   e.g. https://pypi.example.org/simple    (empty: PyPI)
#   TZ              e.g. Europe/Berlin                       (default Etc/UTC)
#   EXTRA_CA_DIR    folder of extra *.crt CA certificates (a TLS-inspecting proxy), sub-folders included: the
#                   Dockerfiles put images/certs/ there and, in host-ca/, the host's own CA folder (the named build
#                   context "host-ca" that compose and scripts/build-images.sh pass); skipped when empty
set -eu

DEVDOCK=/opt/devdock
VENV=$DEVDOCK/venv

log() { printf '[devdock-build] %s\n' "$*"; }

# Trust the site's extra CA certificates, before anything talks TLS. Each keeps its path below EXTRA_CA_DIR in its
# name (host-ca_sub_name.crt), so that two folders' files of one name never overwrite each other.
install_ca_certs() {
    dir=${EXTRA_CA_DIR:-}
    [ -n "$dir" ] && [ -d "$dir" ] || return 0
    count=$(find "$dir" -name '*.crt' -type f | wc -l)
    [ "$count" -gt 0 ] || { log "no extra CA certificates in $dir"; return 0; }
    mkdir -p /usr/local/share/ca-certificates/devdock
    (cd "$dir" && find . -name '*.crt' -type f) | while IFS= read -r crt; do
        name=$(printf '%s' "${crt#./}" | tr '/' '_')
        cp "$dir/${crt#./}" "/usr/local/share/ca-certificates/devdock/$name"
    done
    if command -v update-ca-certificates >/dev/null; then
        update-ca-certificates >/dev/null
    fi
    log "installed extra CA certificates: $count"
}

# Point apt at a site mirror, for deb822 sources and the older sources.list alike: on Debian the main archive
# (deb.debian.org/debian), on Ubuntu the archive (archive.ubuntu.com/ubuntu, ports.ubuntu.com/ubuntu-ports).
# Security updates keep coming from their own archives. (APT_ROOT: another root, for the tests.)
use_apt_mirror() {
    [ -n "${APT_MIRROR:-}" ] || return 0
    root=${APT_ROOT:-}
    # shellcheck source=/dev/null # the image's own file
    id=$(. "$root/etc/os-release" && echo "${ID:-debian}")
    for f in "$root"/etc/apt/sources.list "$root"/etc/apt/sources.list.d/*.list "$root"/etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        case "$id" in
            ubuntu) sed -i -E "s#https?://(archive|ports)\.ubuntu\.com/ubuntu(-ports)?/?([[:space:]]|\$)#${APT_MIRROR}\3#g" "$f" ;;
            *) sed -i -E "s#https?://deb\.debian\.org/debian/?([[:space:]]|\$)#${APT_MIRROR}\1#g" "$f" ;;
        esac
    done
    log "apt mirror for $id: $APT_MIRROR"
}

# A debootstrapped base lists only "<suite> main": make sure there are sources at all, and on Debian
# that security and point-release updates are among them.
ensure_apt_sources() {
    # shellcheck source=/dev/null # the image's own file
    . /etc/os-release
    if [ ! -s /etc/apt/sources.list ] && ! ls /etc/apt/sources.list.d/* >/dev/null 2>&1; then
        echo "deb http://deb.debian.org/debian $VERSION_CODENAME main" > /etc/apt/sources.list
    fi
    [ "${ID:-}" = debian ] || return 0
    if ! grep -rqs -- "-security" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb http://deb.debian.org/debian-security $VERSION_CODENAME-security main" >> /etc/apt/sources.list
        echo "deb http://deb.debian.org/debian $VERSION_CODENAME-updates main" >> /etc/apt/sources.list
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/*
}

set_timezone() {
    tz=${TZ:-Etc/UTC}
    if [ ! -f "/usr/share/zoneinfo/$tz" ]; then
        log "unknown timezone '$tz' (no /usr/share/zoneinfo/$tz)"
        exit 1
    fi
    ln -sf "/usr/share/zoneinfo/$tz" /etc/localtime
    echo "$tz" > /etc/timezone
    log "timezone: $tz"
}

# The system layer: OS packages for the desktop, the terminal and sshd.
step_system() {
    ensure_apt_sources
    use_apt_mirror
    # ca-certificates first (plain HTTP mirrors still work without it), then the site's CAs.
    apt_install ca-certificates
    install_ca_certs
    apt_install \
        tini tzdata locales procps less nano git curl rsync \
        python3 python3-venv \
        openssh-server \
        dbus-x11 xfce4-session xfwm4 xfce4-panel xfdesktop4 xfdesktop4-data xfce4-settings xfce4-terminal thunar \
        x11-xserver-utils xauth tigervnc-standalone-server tigervnc-tools \
        xprintidle xfce4-notifyd libnotify-bin libglib2.0-bin \
        fonts-dejavu-core adwaita-icon-theme \
        mesa-utils libgl1-mesa-dri libvulkan1 \
        fonts-noto-core fonts-noto-cjk fonts-noto-color-emoji \
        xclip x11-utils \
        firefox-esr
    # noVNC's ES modules for devdock's desktop viewer (devdock_ext/desktop.py), from Debian's package but without
    # its dependencies (websockify, numpy): jupyter-server-proxy already carries the websocket.
    apt-get update -qq
    (cd /tmp && apt-get download -qq novnc >/dev/null && dpkg -x novnc_*.deb /tmp/novnc)
    mkdir -p "$DEVDOCK/share/novnc"
    cp -r /tmp/novnc/usr/share/novnc/core /tmp/novnc/usr/share/novnc/vendor "$DEVDOCK/share/novnc/"
    cp /tmp/novnc/usr/share/doc/novnc/copyright "$DEVDOCK/share/novnc/copyright"
    rm -rf /tmp/novnc /tmp/novnc_*.deb /var/lib/apt/lists/*
    set_timezone
    sed -i 's/^# *en_US.UTF-8/en_US.UTF-8/' /etc/locale.gen && locale-gen >/dev/null
    # No screen locker or power manager inside a VNC session: the account has no password.
    rm -f /etc/xdg/autostart/xscreensaver.desktop /etc/xdg/autostart/xfce4-power-manager.desktop \
          /etc/xdg/autostart/light-locker.desktop
    # sshd runs as the user (see entrypoint); the stock root service files are not used.
    rm -f /etc/ssh/ssh_host_*
    # Executable, not readable: a process that execs an unreadable binary is not dumpable, so the user cannot
    # ptrace an sshd that serves a connection on the published port (see devdock-ssh-listener).
    chmod 0711 /usr/sbin/sshd
}

# The Python layer: JupyterLab, the single-user server and the desktop proxy in one venv.
step_python() {
    python3 -m venv "$VENV"
    if [ -n "${PIP_INDEX_URL:-}" ]; then
        export PIP_INDEX_URL
    fi
    # Debian's bundle includes the extra CAs installed above; pip's own certifi does not.
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
    "$VENV/bin/pip" install -q -r "$DEVDOCK/build/requirements.txt"
    # jsonschema's optional IRI format checker (rfc3987-syntax) compiles a lark grammar at import time:
    # 0.8 s of every server start, for a check jupyter_events never needs. Without it, jsonschema
    # simply skips that format. Nothing replaces it (so no licence changes).
    "$VENV/bin/pip" uninstall -q -y rfc3987-syntax lark
    # Compile bytecode once at build time, so no server start pays for it.
    "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" >/dev/null || true
    # The user's own packages: the venv belongs to root, so `pip install` (terminal, %pip, SSH) falls back to
    # the user's site-packages in their home (~/.local), which only a venv that includes the system site sees.
    # Switched on after the install above, so that the venv itself holds everything it needs.
    sed -i 's/^include-system-site-packages = false/include-system-site-packages = true/' "$VENV/pyvenv.cfg"
}

# Selkies in a venv of its own (see selkies-requirements.txt), the libraries its encoder and input need, and
# PulseAudio for the session's sound (devdock-xstartup starts it; Selkies streams it).
step_selkies() {
    apt_install pulseaudio pulseaudio-utils \
        libgbm1 libpixman-1-0 libxkbcommon0 libdrm2 libwayland-server0 libice6 libsm6 libxext6 libxtst6 libxfixes3
    # The session's sound server is started by devdock-xstartup with devdock's own module list, not by XFCE's
    # autostart (which would load the X11 bell, hardware detection and a second sink).
    # Nor does a client start one of its own (an SSH session's pactl, say): the session's is the only one.
    rm -f /etc/xdg/autostart/pulseaudio.desktop /usr/lib/systemd/system/pulseaudio-enable-autospawn.service
    mkdir -p /etc/pulse/client.conf.d
    echo "autospawn = no" > /etc/pulse/client.conf.d/devdock.conf
    # No pip of its own (22 MB): the server venv's pip installs into it (pip --python).
    python3 -m venv --without-pip "$DEVDOCK/selkies"
    if [ -n "${PIP_INDEX_URL:-}" ]; then
        export PIP_INDEX_URL
    fi
    export PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
    "$VENV/bin/pip" --python "$DEVDOCK/selkies/bin/python" install -q -r "$DEVDOCK/build/selkies-requirements.txt"
    "$DEVDOCK/selkies/bin/python" -m compileall -q -j 0 "$DEVDOCK/selkies/lib" >/dev/null || true
}

# devdock's own files: the server extension on the venv's path, its config in the venv's etc/.
step_devdock() {
    site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$DEVDOCK/lib" > "$site/devdock.pth"
    mkdir -p "$VENV/etc/jupyter/jupyter_server_config.d"
    cp "$DEVDOCK/etc/jupyter/jupyter_server_config.d/devdock.json" "$VENV/etc/jupyter/jupyter_server_config.d/"
    cp "$DEVDOCK/etc/jupyter/jupyter_server_config.py" "$VENV/etc/jupyter/jupyter_server_config.py"
    # The JupyterLab side of devdock's notices (a prebuilt extension: no build step, no npm in the image).
    cp -r "$DEVDOCK/lib/labextension" "$VENV/share/jupyter/labextensions/devdock-notices"
    # The desktop viewer and noVNC in one classic script (a module's imports would be fetched in CORS mode, which
    # the hub's XSRF rule for cookie-authenticated requests refuses), bundled by Debian's esbuild, then removed.
    viewer="$DEVDOCK/lib/devdock_ext/viewer"
    cp -r "$DEVDOCK/share/novnc" "$viewer/novnc"
    apt_install esbuild
    esbuild "$viewer/viewer.js" --bundle --format=iife --target=es2020 --log-level=warning \
        --outfile="$viewer/viewer.bundle.js"
    apt-get purge -y -qq esbuild >/dev/null
    mv "$viewer/novnc/copyright" "$viewer/novnc-copyright"
    rm -rf "$viewer/novnc" "$DEVDOCK/share/novnc"
    "$VENV/bin/python" -m compileall -q "$DEVDOCK/lib" >/dev/null
    # The desktop panel shows until when the server may run (devdock-end-time, through xfce4-genmon-plugin's item
    # 23, set up by /etc/xdg/xfce4/panel/genmon-23.rc), left of the clock, in the panel new homes start with.
    apt_install xfce4-genmon-plugin
    "$VENV/bin/python" - /etc/xdg/xfce4/panel/default.xml <<'PANEL'
import sys
path = sys.argv[1]
text = open(path).read()
clock = '<value type="int" value="12"/>'
assert text.count(clock) == 1 and 'value="genmon"' not in text, "the panel's default layout changed"
text = text.replace(clock, '<value type="int" value="23"/>\n        ' + clock)
text = text.replace('<property name="plugins" type="empty">',
                    '<property name="plugins" type="empty">\n    <property name="plugin-23" type="string" value="genmon"/>')
open(path, "w").write(text)
PANEL
    # Interactive shells (JupyterLab terminals, the desktop's) read bash.bashrc: the same environment as SSH.
    echo '. /etc/profile.d/devdock.sh' >> /etc/bash.bashrc
    # No "news" prompt in JupyterLab: it would fetch announcements from the internet for every user.
    "$VENV/bin/jupyter" labextension disable --level=sys_prefix "@jupyterlab/apputils-extension:announcements" >/dev/null
}

# Drop build-only material.
step_cleanup() {
    rm -rf /root/.cache /tmp/* "$DEVDOCK/build/certs"
}

main() {
    step=${1:?usage: build.sh system|python|selkies|devdock|cleanup}
    shift
    "step_$step" "$@"
}

main "$@"
