# shellcheck shell=bash
# deps.sh — the Debian 12 packages the build, the tests and try-it need, and the
# one function that installs the missing ones. Sourced by scripts/test and
# scripts/try-it; it never upgrades or removes anything, and as non-root it only
# says what to install.

OAUTH_DEB_PACKAGES=(
    build-essential cmake pkg-config clang libclang-rt-14-dev
    clang-format  # 14 on Debian 12: the style.clang_format test (tests/CMakeLists.txt)
    libev-dev libpq-dev libcurl4-openssl-dev libjansson-dev libsodium-dev libsystemd-dev
    libssl-dev libinih-dev libcmocka-dev libmicrohttpd-dev
    postgresql-15 postgresql-client-15
    python3 python3-pytest python3-cryptography python3-psycopg python3-aiohttp
    python3-h2  # tests/tokenserver/h2server.py: an HTTP/2 server that resets after answering
    python3-django python3-psycopg2  # tests/integration/test_django_guide.py: docs/django.md, run
    openssl valgrind systemd curl ca-certificates
    systemd-container debootstrap  # tests/integration/test_nspawn.py boots a container
    scdoc groff-base debhelper lintian rpm
    prometheus  # promtool: the metrics exposition and the alerting rules
    pgbouncer  # tests/integration/test_pooler.py: session and transaction pooling
    nginx-light libnginx-mod-http-echo  # the benchmark's token endpoint (bench smoke test)
)

# Our fixtures run their own throwaway cluster: keep the packages from creating
# and starting a system "main" cluster when postgresql-common is installed here.
oauth_no_main_cluster() {
    mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/oauth-refreshd-no-main-cluster.conf
    if [ -f /etc/postgresql-common/createcluster.conf ]; then
        sed -ri 's/^#?\s*(create_main_cluster)\s*=.*$/\1 = false/' /etc/postgresql-common/createcluster.conf
    fi
}

oauth_missing_packages() {
    local p status
    for p in "${OAUTH_DEB_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || echo "$p"
    done
}

oauth_install_deps() {
    local missing
    mapfile -t missing < <(oauth_missing_packages)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "Missing Debian packages: ${missing[*]}" >&2
        echo "Install them with:  sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
        return 1
    fi
    echo "==> installing ${#missing[@]} missing package(s): ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-y -q --no-install-recommends -o Dpkg::Options::=--force-confdef
                    -o Dpkg::Options::=--force-confold)
    apt-get update -qq
    if ! dpkg-query -W -f='${Status}' postgresql-common 2>/dev/null | grep -q "install ok installed"; then
        apt-get install "${apt_opts[@]}" postgresql-common >/dev/null
    fi
    oauth_no_main_cluster
    # Packages such as nginx and prometheus would start system services on install;
    # the tests run their own, on loopback ports of their choosing.
    local own_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get install "${apt_opts[@]}" "${missing[@]}" >/dev/null || true
    [ "$own_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    mapfile -t missing < <(oauth_missing_packages)
    if [ "${#missing[@]}" -ne 0 ]; then
        echo "Still missing after apt-get install: ${missing[*]}" >&2
        return 1
    fi
}

# The npm packages the tests pin (tests/oidc: oidc-provider, the certified
# OpenID Provider that judges the daemon's refreshes). `npm ci` installs exactly
# what package-lock.json names (a second or two). Node.js and npm come with the
# machine; Debian's nodejs and npm are the fallback where they do not.
oauth_install_npm() {
    local dir=$1
    if ! command -v npm >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ]; then
            echo "npm is missing: install Node.js and npm (Debian: nodejs npm)" >&2
            return 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nodejs npm >/dev/null
    fi
    echo "==> npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}
