#!/usr/bin/env bash
# packaging/build-rpm.sh OUTDIR — builds the oauth-refreshd binary RPM from
# this source tree with rpmbuild -bb and leaves it in OUTDIR; prints the .rpm's
# path as the last line of stdout. On Debian (empty rpm database) the build
# dependencies cannot be checked, so --nodeps is passed there
# (OAUTH_RPM_NODEPS=0 turns it off, e.g. on Fedora). The source tree is never
# written to; the full log is OUTDIR/build-rpm.log.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 OUTDIR" >&2
    exit 64
fi
SRC=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
command -v rpmbuild >/dev/null 2>&1 || { echo "$0: rpmbuild not found (apt-get install rpm)" >&2; exit 69; }

SPEC=$SRC/packaging/rpm/oauth-refreshd.spec
VERSION=$(sed -n 's/^Version:[[:space:]]*//p' "$SPEC")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/oauth-refreshd-rpm.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS,tree}

TREE=$WORK/tree/oauth-refreshd-$VERSION
mkdir -p "$TREE"
(
    cd "$SRC"
    find . -mindepth 1 -maxdepth 1 ! -name .git ! -name 'build' ! -name 'build-*' \
        -exec cp -a {} "$TREE/" \;
)
find "$TREE" -name __pycache__ -type d -prune -exec rm -rf {} +
tar -C "$WORK/tree" -czf "$WORK/SOURCES/oauth-refreshd-$VERSION.tar.gz" "oauth-refreshd-$VERSION"

nodeps=()
[ "${OAUTH_RPM_NODEPS:-1}" = 1 ] && nodeps=(--nodeps)
LOG=$OUT/build-rpm.log
echo "==> rpmbuild -bb ${nodeps[*]} (log: $LOG)"
if ! rpmbuild -bb "${nodeps[@]}" --define "_topdir $WORK" \
        --define "_smp_build_ncpus $(nproc)" "$SPEC" > "$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "$0: rpmbuild failed (full log: $LOG)" >&2
    exit 1
fi
shopt -s nullglob
rpms=("$WORK"/RPMS/*/oauth-refreshd-"$VERSION"-*.rpm)
[ "${#rpms[@]}" -ge 1 ] || { echo "$0: no RPM was built" >&2; exit 1; }
main=""
for r in "${rpms[@]}"; do
    cp -a "$r" "$OUT/"
    case "$(basename "$r")" in oauth-refreshd-"$VERSION"-*) main=$OUT/$(basename "$r") ;; esac
done
for r in "$WORK"/RPMS/*/oauth-refreshd-debug*.rpm; do cp -a "$r" "$OUT/"; done
echo "$main"
