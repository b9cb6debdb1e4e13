#!/bin/bash
# make-rootfs.sh — builds (once) and caches a minimal Debian 12 root with systemd
# in it, for the nspawn integration test (tests/integration/test_nspawn.py).
#
# Owns: choosing the apt mirror this machine is configured with, running
# debootstrap into a temporary directory and renaming it into the cache only
# when complete, so a half-built root is never used; the cache key is a hash of
# the suite, the mirror and the package list. Prints the root's path on stdout.
# Must never: modify a completed cached root (tests boot a private copy of it),
# or download anything but what debootstrap fetches from the configured mirror.
# Roots cached under an older key are removed once a new one is complete.
#
# Usage: make-rootfs.sh [CACHE_DIR]   (default /var/cache/oauth-refreshd-tests)
set -euo pipefail

CACHE_DIR=${1:-/var/cache/oauth-refreshd-tests}
SUITE=bookworm
PACKAGES="systemd,systemd-sysv,dbus,procps,libev4,libpq5,libcurl4,libjansson4,libsodium23,libinih1,libsystemd0,libssl3,libmicrohttpd12,adduser,libnss-systemd"

mirror_from_sources() {
    # deb822 files: the URIs of a stanza whose Suites name the suite exactly;
    # one-line files: "deb [opts] URL SUITE ...".
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            BEGIN { RS=""; FS="\n" }
            {
                uris=""; ok=0; deb=0
                for (i = 1; i <= NF; i++) {
                    if ($i ~ /^Types:/ && $i ~ /[ \t]deb([ \t]|$)/) deb=1
                    if ($i ~ /^URIs:/) { u=$i; sub(/^URIs:[ \t]*/, "", u); split(u, a, /[ \t]+/); uris=a[1] }
                    if ($i ~ /^Suites:/) { n=split($i, s, /[ \t]+/); for (j = 2; j <= n; j++) if (s[j] == suite) ok=1 }
                }
                if (deb && ok && uris != "") { print uris; exit }
            }' "$f"
    done | head -n1
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -nE 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+'"$SUITE"'[[:space:]].*/\2/p' "$f"
    done | head -n1
}

MIRROR=${OAUTH_NSPAWN_MIRROR:-$(mirror_from_sources | head -n1)}
if [ -z "$MIRROR" ]; then
    echo "make-rootfs.sh: no apt mirror for $SUITE found in /etc/apt/sources.list*" >&2
    exit 2
fi
command -v debootstrap >/dev/null || { echo "make-rootfs.sh: debootstrap is not installed" >&2; exit 2; }

KEY=$(printf '%s\n%s\n%s\n' "$SUITE" "$MIRROR" "$PACKAGES" | sha256sum | cut -c1-16)
ROOT="$CACHE_DIR/rootfs-$SUITE-$KEY"
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock 9
if [ -f "$ROOT/.complete" ]; then
    echo "$ROOT"
    exit 0
fi
# Under the lock no other build runs: anything half-built is from an interrupted run.
rm -rf --one-file-system "$CACHE_DIR"/.build-*
TMP="$CACHE_DIR/.build-$KEY.$$"
echo "make-rootfs.sh: debootstrap $SUITE from $MIRROR into $ROOT (first run only)" >&2
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$TMP" "$MIRROR" >"$CACHE_DIR/debootstrap-$KEY.log" 2>&1; then
    echo "make-rootfs.sh: debootstrap failed; see $CACHE_DIR/debootstrap-$KEY.log" >&2
    tail -n 20 "$CACHE_DIR/debootstrap-$KEY.log" >&2
    rm -rf "$TMP"
    exit 1
fi
# A bootable container: no getty on the console, a machine id made at boot,
# and nothing else started that the test does not need.
rm -f "$TMP/etc/machine-id" && : >"$TMP/etc/machine-id"
echo "oauth-nspawn" >"$TMP/etc/hostname"
rm -rf "$TMP/var/cache/apt/archives/"*.deb
touch "$TMP/.complete"
rm -rf "$ROOT"
mv "$TMP" "$ROOT"
for old in "$CACHE_DIR"/rootfs-*; do
    [ "$old" = "$ROOT" ] || rm -rf --one-file-system "$old" "$CACHE_DIR/debootstrap-${old##*-}.log"
done
echo "$ROOT"
