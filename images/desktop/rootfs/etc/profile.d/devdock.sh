# shellcheck shell=sh
# devdock: one environment everywhere (JupyterLab terminals, notebooks, the desktop, SSH).
# Debian's /etc/profile sets a PATH of its own for login shells (an interactive SSH session); put the server's
# back, which devdock-user-start handed to sshd as DEVDOCK_PATH.
if [ -n "${DEVDOCK_PATH:-}" ]; then
    PATH=$DEVDOCK_PATH
    export PATH
fi
# When the server had to start without the user's packages (devdock-user-start's safe mode), the user's shells still
# see them: that is where they find and remove the one that broke the start.
unset PYTHONNOUSERSITE
