#!/usr/bin/env bash
# packaging/build-deb.sh OUTDIR — builds the oauth-refreshd Debian package
# offline from this source tree and leaves oauth-refreshd_<version>_<arch>.deb
# (and the .buildinfo/.changes) in OUTDIR; prints the .deb's path as the last
# line of stdout.
#
# It copies the tree (without build directories and .git) into a temporary
# directory, puts packaging/debian there as debian/, and runs
# `dpkg-buildpackage -us -uc -b`. The source tree is never written to.
# Needs: dpkg-dev, debhelper and the Build-Depends of packaging/debian/control
# (scripts/lib/deps.sh installs them). The full build log goes to
# OUTDIR/build-deb.log; on failure its tail is printed.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 64
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)

for tool in dpkg-buildpackage dh; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "$0: $tool not found (apt-get install dpkg-dev debhelper)" >&2
        exit 69
    fi
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/oauth-refreshd-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/oauth-refreshd
mkdir -p "$TREE"

# Everything but build output, VCS data and caches.
(
    cd "$SRC"
    find . -mindepth 1 -maxdepth 1 \
        ! -name .git ! -name 'build' ! -name 'build-*' ! -name debian \
        -exec cp -a {} "$TREE/" \;
)
find "$TREE" -name __pycache__ -type d -prune -exec rm -rf {} +
cp -a "$SRC/packaging/debian" "$TREE/debian"

LOG=$OUT/build-deb.log
echo "==> dpkg-buildpackage -us -uc -b in $TREE (log: $LOG)"
if ! (cd "$TREE" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}" \
        dpkg-buildpackage -us -uc -b) > "$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "$0: dpkg-buildpackage failed (full log: $LOG)" >&2
    exit 1
fi

shopt -s nullglob
built=("$WORK"/*.deb "$WORK"/*.buildinfo "$WORK"/*.changes)
cp -a "${built[@]}" "$OUT/"
debs=("$WORK"/oauth-refreshd_*.deb)
[ "${#debs[@]}" -eq 1 ] || { echo "$0: expected one oauth-refreshd .deb, found ${#debs[@]}" >&2; exit 1; }
echo "$OUT/$(basename "${debs[0]}")"
