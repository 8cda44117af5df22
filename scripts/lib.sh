# Shared by scripts/dev and scripts/test: install what is missing, then build.
# Sourced, not executed.  Works from any working directory.

HIVE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages needed to build and run the daemon.
HIVE_BUILD_PACKAGES="gcc pkg-config meson ninja-build libjansson-dev libsqlite3-dev libsystemd-dev libgit2-dev socat nix-bin git libmicrohttpd-dev"
# Extra packages the test suite needs.
HIVE_TEST_PACKAGES="libcmocka-dev python3 python3-pytest socat clang libclang-rt-14-dev clang-format util-linux systemd-container python3-selenium chromium chromium-driver"

hive_missing_packages() {
    local missing="" p
    for p in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing="$missing $p"
        fi
    done
    echo "${missing# }"
}

# hive_install PACKAGE... : installs the missing ones, or says exactly what to install and stops.
hive_install() {
    if ! command -v dpkg-query >/dev/null 2>&1 || [ ! -f /etc/debian_version ]; then
        echo "hyperhive: this is not a Debian system, so nothing was installed." >&2
        echo "Install these (Debian names; use your distribution's equivalents): $*" >&2
        echo "then run this command again." >&2
        exit 1
    fi
    local missing
    missing=$(hive_missing_packages "$@")
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "hyperhive: these Debian packages are missing: $missing" >&2
        echo "Install them as root, then run this command again:" >&2
        echo "  sudo apt-get update && sudo apt-get install -y $missing" >&2
        exit 1
    fi
    echo "hyperhive: installing $missing" >&2
    apt-get update -qq >&2 || { echo "hyperhive: apt-get update failed" >&2; exit 1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2 ||
        { echo "hyperhive: apt-get install $missing failed" >&2; exit 1; }
}

# hive_build : configures (once) and builds ./build; -Dwerror=true when $CI is set.
hive_build() {
    local werror=false
    [ -n "${CI:-}" ] && werror=true
    cd "$HIVE_ROOT" || exit 1
    if [ ! -f build/build.ninja ]; then
        meson setup build -Dwerror=$werror >&2 || { echo "hyperhive: meson setup failed" >&2; exit 1; }
    else
        meson configure build -Dwerror=$werror >&2 || exit 1
    fi
    ninja -C build >&2 || { echo "hyperhive: the build failed (see above)" >&2; exit 1; }
}

# hive_nix_env : Debian's nix-bin, run as root, builds as the members of the nixbld group,
# which only the nix-setup-systemd package creates.  Without that group (a fresh machine),
# nix builds fail ("the group 'nixbld' ... does not exist"); then the daemon and the tests
# started from these scripts build as root, outside nix's sandbox (which needs the build
# users).  Only this process's environment changes; a NIX_CONFIG already set still wins.
hive_nix_env() {
    if [ "$(id -u)" = 0 ] && ! getent group nixbld >/dev/null; then
        local ours
        ours=$(printf 'build-users-group =\nsandbox = false')
        export NIX_CONFIG="$ours${NIX_CONFIG:+
$NIX_CONFIG}"
    fi
}
