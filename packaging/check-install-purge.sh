#!/bin/sh
# packaging/check-install-purge.sh DEB — run as root INSIDE a booted Debian 12
# machine with systemd (the nspawn test machine): installs the oauth-refreshd
# .deb, checks what the package promises, then purges it and checks that
# nothing is left. Prints one "ok: ..." line per check; the first failed check
# prints "FAIL: ..." and exits 1. Needs the package's dependencies installable
# (already present, or an apt source reachable: apt-get install ./DEB).
#
# What it proves: the service is installed disabled and not started; the
# config is a conffile with mode 0640 group oauth-refreshd-conf and the credentials
# directory is 0700; the unit's DynamicUser can read the config (the daemon
# gets past loading it and waits for the database); purge removes the files,
# the config, the state directory and the group.
set -eu

DEB=${1:?usage: $0 DEB}
PKG=oauth-refreshd
CONF=/etc/oauth-refreshd/oauth-refreshd.conf
CRED=/etc/oauth-refreshd/credentials

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }

export DEBIAN_FRONTEND=noninteractive
if ! dpkg -i "$DEB" >/tmp/check-install.log 2>&1; then
    apt-get install -y --no-install-recommends -f >>/tmp/check-install.log 2>&1 \
        || { cat /tmp/check-install.log; fail "dpkg -i $DEB"; }
fi
[ "$(dpkg-query -W -f='${Status}' $PKG)" = "install ok installed" ] || fail "$PKG is not installed"
ok "installed $(dpkg-query -W -f='${Version}' $PKG)"

for f in /usr/sbin/oauth-refreshd /usr/bin/oauth-refreshctl /lib/systemd/system/oauth-refreshd.service \
         /usr/share/oauth-refreshd/sql/oauth-refreshd.sql /usr/share/man/man8/oauth-refreshd.8.gz \
         /usr/share/man/man1/oauth-refreshctl.1.gz /usr/share/man/man5/oauth-refreshd.conf.5.gz "$CONF"; do
    [ -e "$f" ] || fail "missing $f"
done
ok "files in place"

[ "$(stat -c '%a %U %G' "$CONF")" = "640 root oauth-refreshd-conf" ] \
    || fail "$CONF is $(stat -c '%a %U %G' "$CONF"), expected 640 root oauth-refreshd-conf"
[ "$(stat -c '%a %U' "$CRED")" = "700 root" ] || fail "$CRED is $(stat -c '%a %U' "$CRED"), expected 700 root"
ok "config 0640 root:oauth-refreshd-conf, credentials 0700 root"

state=$(systemctl is-enabled $PKG.service 2>&1 || true)
[ "$state" = "disabled" ] || fail "is-enabled: $state, expected disabled"
active=$(systemctl is-active $PKG.service 2>&1 || true)
[ "$active" = "inactive" ] || fail "is-active: $active, expected inactive (never started by the package)"
ok "service installed disabled and not started"

# Credentials and a database that does not answer: the daemon must load the
# configuration as its DynamicUser and then wait for the database.
umask 077
oauth-refreshctl keygen > "$CRED/fernet.keys"
for p in google github microsoft; do echo "dummy-$p-secret" > "$CRED/$p.secret"; done
cp -p "$CONF" "$CONF.orig"
sed -i 's|^conninfo = .*|conninfo = host=127.0.0.1 port=9 connect_timeout=2|' "$CONF"
systemctl start --no-block $PKG.service
sleep 4
log=$(journalctl -u $PKG.service -b --no-pager -o cat 2>&1 || true); echo "$log" > "${OAUTH_CHECK_LOGDIR:-/var/tmp}/oauth-refreshd-unit.log"
systemctl stop $PKG.service || true
mv "$CONF.orig" "$CONF"
echo "$log" | grep -q "Permission denied" && { echo "$log"; fail "the daemon could not read a file"; }
echo "$log" | grep -q "cannot connect to the database" || { echo "$log"; fail "the daemon did not get to the database"; }
ok "the unit's DynamicUser reads the config and credentials"

dpkg --purge $PKG >/tmp/check-purge.log 2>&1 || { cat /tmp/check-purge.log; fail "dpkg --purge"; }
# The test's own credential files are the administrator's: purge keeps them
# (see postrm); remove them, then nothing of the package may remain.
rm -f "$CRED"/*.keys "$CRED"/*.secret
rmdir "$CRED" /etc/oauth-refreshd 2>/dev/null || true
st=$(dpkg-query -W -f='${Status}' $PKG 2>/dev/null || true)
case "$st" in "" | *not-installed) ;; *) fail "$PKG is still '$st' after purge" ;; esac
for f in /usr/sbin/oauth-refreshd /usr/bin/oauth-refreshctl /lib/systemd/system/oauth-refreshd.service \
         /lib/systemd/system/oauth-refreshd.service.d /usr/share/oauth-refreshd /etc/oauth-refreshd \
         /var/lib/oauth-refreshd /var/lib/private/oauth-refreshd; do
    if [ -e "$f" ] || [ -L "$f" ]; then fail "left after purge: $f"; fi
done
getent group oauth-refreshd-conf >/dev/null && fail "group oauth-refreshd-conf left after purge"
ok "purged cleanly"
