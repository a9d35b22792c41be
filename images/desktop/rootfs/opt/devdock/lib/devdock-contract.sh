# shellcheck shell=sh
# What the entrypoint accepts from the spawner (devdock_spawner/contract.py), as functions it sources while root.
# tests/unit/test_image_contract.py runs these same functions against the hub's own rules (naming.login_name,
# contract.MIN_UID) on a table of awkward usernames, so the two sides cannot drift apart.

devdock_newline='
'

# DEVDOCK_LOGIN: useradd's rule for a login name (the hub's naming.login_name only makes names that pass it).
devdock_check_login() {
    case "$1" in
        *"$devdock_newline"*) echo "devdock: refusing a login name with a line break" >&2; return 1 ;;
    esac
    # grep matches line by line: a name of two lines would pass as two names (refused just above).
    if ! printf '%s' "$1" | grep -Eq '^[a-z_][a-z0-9_-]{0,31}$'; then
        echo "devdock: refusing login name '$1' (must match ^[a-z_][a-z0-9_-]{0,31}\$)" >&2
        return 1
    fi
}

# DEVDOCK_UID: a number, at least 1000 (contract.MIN_UID): below are the system's own accounts.
devdock_check_uid() {
    case "$1" in
        ''|*[!0-9]*) echo "devdock: DEVDOCK_UID must be a number, got '$1'" >&2; return 1 ;;
    esac
    if [ "$1" -lt 1000 ]; then
        echo "devdock: DEVDOCK_UID must be >= 1000, got '$1'" >&2
        return 1
    fi
}
