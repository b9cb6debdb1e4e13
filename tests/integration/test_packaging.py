"""Packaging and man pages (issue 7): what an operator installs and reads.

Proves that
- the three man pages (docs/man/*.scd, built by CMake with scdoc) render with
  groff and man without a single warning;
- they are complete against the code, not against a list kept here: every
  option printed by `oauth-refreshd --help`, every command of
  `oauth-refreshctl --help` and every option of each command's --help, every
  section and key that src/config_ini.c accepts (with the default and, for
  numbers and durations, the range), every exit code of include/common.h,
  every MESSAGE_ID of include/log.h, every signal the daemon handles, every
  NOTIFY channel of the SQL and the code (with JSON examples whose fields are
  the ones the SQL sends), every SQL object, and every credential and file of
  the systemd unit. Adding any of these without documenting it fails here;
- `cmake --install` lays out the binaries, unit, example config, SQL and man
  pages;
- packaging/build-deb.sh builds the .deb offline, lintian reports no error or
  warning, the package holds the expected files with the conffile 0640 and
  the credentials directory 0700, depends on what the unit calls, never
  starts or enables the service, and its Build-Depends cover every library
  CMakeLists.txt looks for;
- packaging/build-rpm.sh builds the RPM (rpmbuild -bb --nodeps) with the same
  layout and systemd scriptlets.

The .deb and the RPM are built once per session (about 25 s and 8 s here).
Installing the .deb into a booted machine and purging it is
packaging/check-install-purge.sh, run by the systemd-nspawn test.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("OAUTH_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("OAUTH_BUILD_DIR") or os.path.join(SRC, "build")

PAGES = {
    "oauth-refreshd.8": "oauth-refreshd.8",
    "oauth-refreshctl.1": "oauth-refreshctl.1",
    "oauth-refreshd.conf.5": "oauth-refreshd.conf.5",
}


def read(*parts):
    with open(os.path.join(SRC, *parts), encoding="utf-8") as f:
        return f.read()


def run(cmd, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(cmd, **kw)


# ---- building and rendering the man pages ----------------------------------------------------


@pytest.fixture(scope="session")
def built():
    """The binaries and the roff pages of this build (a no-op when up to date)."""
    r = run(["cmake", "--build", BUILD, "--target", "oauth-refreshd", "oauth-refreshctl", "man"])
    assert r.returncode == 0, f"building the binaries and man pages failed:\n{r.stdout}\n{r.stderr}"
    pages = {name: os.path.join(BUILD, "man", name) for name in PAGES}
    for name, path in pages.items():
        assert os.path.isfile(path), f"expected the roff page {path} after building target man"
    return pages


def render(path):
    """Plain text as a reader sees it: no hyphenation, long lines, no overstrike."""
    r = run(["groff", "-t", "-man", "-Tascii", "-P-cbou", "-rHY=0", "-rLL=250n", path])
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="session")
def text(built):
    return {name: render(path) for name, path in built.items()}


def sections(page_text):
    """Top-level sections (unindented headings) -> their text."""
    out, name, buf = {}, None, []
    for line in page_text.splitlines():
        if re.match(r"^[A-Z][A-Z /-]+$", line):
            if name:
                out[name] = "\n".join(buf)
            name, buf = line.strip(), []
        elif name:
            buf.append(line)
    if name:
        out[name] = "\n".join(buf)
    return out


def subsections(section_text):
    """Subsections (headings indented by 3) -> their text."""
    out, name, buf = {}, None, []
    for line in section_text.splitlines():
        if re.match(r"^ {3}\S", line):
            if name:
                out[name] = "\n".join(buf)
            name, buf = line.strip(), []
        elif name:
            buf.append(line)
    if name:
        out[name] = "\n".join(buf)
    return out


def entries(section_text):
    """Definition-list entries (terms indented by 7) -> their body, one line."""
    out, term, buf = {}, None, []
    for line in section_text.splitlines():
        if re.match(r"^ {7}\S", line):
            if term is not None:
                out[term] = " ".join(buf)
            term, buf = line.strip(), []
        elif term is not None and line.strip():
            buf.append(line.strip())
    if term is not None:
        out[term] = " ".join(buf)
    return out


def words(s):
    return re.sub(r"\s+", " ", s)


def test_man_pages_render_without_groff_warnings(built):
    for name, path in built.items():
        r = run(["groff", "-t", "-man", "-Tutf8", "-ww", "-z", path])
        assert r.returncode == 0 and r.stderr == "", (
            f"{name}: expected groff -ww to render silently, saw rc={r.returncode}:\n{r.stderr}")
        r = run(["groff", "-man", "-Tutf8", "-ww", "-z", path])
        assert r.returncode == 0 and r.stderr == "", (
            f"{name}: expected plain groff -man -ww (no tbl) to render silently:\n{r.stderr}")


def test_man_pages_render_with_man_l(built):
    env = dict(os.environ, MANWIDTH="80", MANPAGER="cat", PAGER="cat", LC_ALL="C.UTF-8")
    for name, path in built.items():
        r = run(["man", "--warnings", "-l", path], env=env)
        assert r.returncode == 0 and r.stderr == "", (
            f"{name}: expected man -l to render without warnings, saw rc={r.returncode}:\n{r.stderr}")
        title = name.rsplit(".", 1)[0]
        assert title in r.stdout and "NAME" in r.stdout and "SEE ALSO" in r.stdout, (
            f"{name}: rendered page lacks its title, NAME or SEE ALSO:\n{r.stdout[:400]}")


def test_man_pages_have_the_usual_sections(text):
    for name, t in text.items():
        have = set(sections(t))
        for want in ("NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"):
            assert want in have, f"{name}: expected a {want} section, have {sorted(have)}"
    for name in ("oauth-refreshd.8", "oauth-refreshctl.1"):
        assert "EXIT STATUS" in sections(text[name]), f"{name}: expected an EXIT STATUS section"


# ---- completeness against the code ------------------------------------------------------------


def help_options(help_text):
    """Every -x and --long-option token in a --help text."""
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w-])", help_text))


def test_every_daemon_option_of_help_is_documented(built, text):
    r = run([os.path.join(BUILD, "oauth-refreshd"), "--help"])
    assert r.returncode == 0, r.stderr
    opts = help_options(r.stdout)
    assert {"-c", "--config", "--check-config", "--once", "--help", "--version"} <= opts, (
        f"help parsing is broken: saw {sorted(opts)}")
    documented = entries(sections(text["oauth-refreshd.8"])["OPTIONS"])
    terms = " ".join(documented)
    missing = sorted(o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", terms))
    assert not missing, (f"options printed by oauth-refreshd --help but not described under "
                         f"OPTIONS in oauth-refreshd(8): {missing} (documented terms: {list(documented)})")


def ctl_help():
    r = run([os.path.join(BUILD, "oauth-refreshctl"), "--help"])
    assert r.returncode == 0, r.stderr
    head, _, cmds = r.stdout.partition("Commands:")
    commands = re.findall(r"^  ([a-z][a-z0-9-]*)\s{2,}", cmds, re.M)
    assert commands, f"no commands parsed from oauth-refreshctl --help:\n{r.stdout}"
    return help_options(head), commands


def test_every_ctl_global_option_is_documented(built, text):
    opts, _ = ctl_help()
    assert {"-c", "--config", "--help", "--version"} <= opts, sorted(opts)
    terms = " ".join(entries(sections(text["oauth-refreshctl.1"])["GLOBAL OPTIONS"]))
    missing = sorted(o for o in opts if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", terms))
    assert not missing, f"global options of oauth-refreshctl --help not in GLOBAL OPTIONS: {missing}"


def test_every_ctl_command_and_its_options_are_documented(built, text):
    global_opts, commands = ctl_help()
    subs = subsections(sections(text["oauth-refreshctl.1"])["COMMANDS"])
    missing_cmds = [c for c in commands if c not in subs]
    assert not missing_cmds, (f"commands of oauth-refreshctl --help without a subsection under "
                              f"COMMANDS in oauth-refreshctl(1): {missing_cmds} (have {list(subs)})")
    problems = []
    for cmd in commands:
        r = run([os.path.join(BUILD, "oauth-refreshctl"), cmd, "--help"])
        assert r.returncode == 0, f"oauth-refreshctl {cmd} --help exited {r.returncode}: {r.stderr}"
        opts = help_options(r.stdout) - global_opts - {"-h", "--help"}
        body = subs[cmd]
        synopsis = body.strip().splitlines()[0] if body.strip() else ""
        assert f"oauth-refreshctl" in synopsis and cmd in synopsis, (
            f"{cmd}: expected the subsection to start with its synopsis, saw {synopsis!r}")
        terms = " ".join(entries(body))
        for o in sorted(opts):
            if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", terms):
                problems.append(f"{cmd} {o}")
    assert not problems, (f"options printed by `oauth-refreshctl CMD --help` but not described as "
                          f"an entry in CMD's subsection: {problems}")
    assert re.search(r"-h/--help", words(text["oauth-refreshctl.1"])), (
        "expected oauth-refreshctl(1) to say that every command takes -h/--help")


def config_schema():
    """{section: [keys]} exactly as the config loader accepts them: the key
    tables are in src/config_ini.c, the named providers in src/provider_id.c."""
    c = read("src", "config_ini.c") + read("src", "provider_id.c")

    def strings(block):
        return re.findall(r'"([a-z_]+)"', block)

    arrays = {m.group(1): strings(m.group(2)) for m in re.finditer(
        r"static const char \*const (\w+)\[[^\]]*\]\s*=\s*\{([^;]*?)NULL\s*,?\s*\};", c)}
    bases = re.search(r"base_section_names\[SEC_PROVIDER\]\s*=\s*\{(.*?)\};", c, re.S)
    providers = re.search(r"provider_names\[PROVIDER_NAMED_COUNT\]\s*=\s*\{(.*?)\};", c, re.S)
    assert bases and providers and "provider_keys" in arrays, "config_ini.c's key tables or provider_id.c's names moved; update config_schema()"
    schema = {}
    for sec in strings(bases.group(1)):
        assert sec in arrays, f"config_ini.c: no key array named {sec!r} (section_keys changed?)"
        schema[sec] = arrays[sec]
    # The generic dialect's keys are refused on the named providers, tenant on
    # the generic ones; the man page shows the generic section as [provider.keycloak].
    generic_only = {"dialect", "issuer", "client_auth", "send_scope"}
    for p in strings(providers.group(1)):
        schema[f"provider.{p}"] = [k for k in arrays["provider_keys"] if k not in generic_only]
    schema["provider.keycloak"] = [k for k in arrays["provider_keys"] if k != "tenant"]
    assert schema.get("refresh") and "lead_time" in schema["refresh"], schema
    return schema


def example_defaults():
    """{section: {key: value}} from conf/oauth-refreshd.conf (which shows every key)."""
    out, sec = {}, None
    for line in read("conf", "oauth-refreshd.conf").splitlines():
        m = re.match(r"^\[([^\]]+)\]", line)
        if m:
            sec = m.group(1)
            out.setdefault(sec, {})
            continue
        m = re.match(r"^([a-z_]+)\s*=\s*(.*?)\s*$", line)
        if m and sec:
            out[sec][m.group(1)] = m.group(2)
    return out


def conf_sections(text):
    """{section name: {key: entry body}} of oauth-refreshd.conf(5)."""
    subs = subsections(sections(text["oauth-refreshd.conf.5"])["SECTIONS AND KEYS"])
    out = {}
    for heading, body in subs.items():
        for name in re.findall(r"\[([a-z.]+)\]", heading):
            ents = {}
            for term, desc in entries(body).items():
                m = re.match(r"^([a-z_]+) = ", term)
                if m:
                    ents[m.group(1)] = term + " :: " + desc
            out[name] = ents
    return out


def test_every_config_section_and_key_is_documented_in_its_section(text):
    schema = config_schema()
    doc = conf_sections(text)
    missing = []
    for sec, keys in schema.items():
        if sec not in doc:
            missing.append(f"[{sec}] (no subsection)")
            continue
        missing += [f"[{sec}] {k}" for k in keys if k not in doc[sec]]
    assert not missing, (f"sections/keys accepted by src/config_ini.c but not described (as `key = ...` "
                         f"under their [section]) in oauth-refreshd.conf(5): {missing}")
    extra = [f"[{s}] {k}" for s, ks in doc.items() for k in ks if s in schema and k not in schema[s]]
    assert not extra, f"oauth-refreshd.conf(5) describes keys config_ini.c does not accept: {extra}"


def test_every_config_key_states_its_default_and_numbers_their_range(text):
    doc = conf_sections(text)
    problems = []
    examples = example_defaults()
    for sec, keys in config_schema().items():
        for key in keys:
            body = doc.get(sec, {}).get(key, "")
            if "Default" not in body and "Required" not in body:
                problems.append(f"[{sec}] {key}: says neither 'Default' nor 'Required'")
            if re.search(r" = (DURATION|COUNT|NUMBER) ::", body) and "Range:" not in body:
                problems.append(f"[{sec}] {key}: a number or duration without 'Range:'")
            value = examples.get(sec, {}).get(key, "")
            example_only = sec.startswith("provider.") and key in ("client_id", "client_secret_file")
            if value and not example_only and value not in body:
                problems.append(f"[{sec}] {key}: the example's value {value!r} is not mentioned")
    assert not problems, "oauth-refreshd.conf(5) entries:\n" + "\n".join(problems)


def test_every_exit_code_is_documented_in_both_pages(text):
    codes = sorted(set(int(n) for n in re.findall(r"EXIT_\w+\s*=\s*(\d+)", read("include", "common.h"))))
    assert codes and 78 in codes, f"no exit codes parsed from include/common.h: {codes}"
    for page in ("oauth-refreshd.8", "oauth-refreshctl.1"):
        documented = set(int(t) for t in entries(sections(text[page])["EXIT STATUS"]) if t.isdigit())
        missing = [c for c in codes if c not in documented]
        assert not missing, f"{page}: exit codes of include/common.h missing from EXIT STATUS: {missing}"


def test_every_message_id_of_log_h_is_in_the_daemon_page(text):
    ids = re.findall(r'#define (MSGID_\w+)\s+"([0-9a-f]{32})"', read("include", "log.h"))
    assert len(ids) >= 10, f"expected the MESSAGE_IDs of include/log.h, parsed {ids}"
    logging = sections(text["oauth-refreshd.8"])["LOGGING"]
    documented = entries(logging)
    missing = [f"{name} {mid}" for name, mid in ids if not any(t.startswith(mid) for t in documented)]
    assert not missing, f"MESSAGE_IDs of include/log.h not described in LOGGING of oauth-refreshd(8): {missing}"
    for field in re.findall(r'"(OAUTH_[A-Z_]+)=', read("src", "log.c")):
        assert field in logging, f"journal field {field} (src/log.c) is not described in LOGGING"


def test_every_signal_the_daemon_handles_is_documented(text):
    handled = set(re.findall(r"ev_signal_init\([^,]+,\s*\w+,\s*(SIG[A-Z]+)\)", read("src", "daemon.c")))
    assert {"SIGHUP", "SIGTERM", "SIGINT"} <= handled, f"parsed signals {handled} from src/daemon.c"
    sig = sections(text["oauth-refreshd.8"])["SIGNALS"]
    terms = " ".join(entries(sig))
    missing = sorted(s for s in handled if s not in terms)
    assert not missing, f"signals handled in src/daemon.c but not described under SIGNALS: {missing}"
    assert re.search(r"Second SIGTERM", terms), "expected an entry for the second SIGTERM/SIGINT"
    for word in ("Reload", "shutdown_timeout", "Abandon"):
        assert word in sig, f"expected SIGNALS to mention {word!r}"


def channels_in_code():
    found = set()
    for rel in (("sql", "oauth-refreshd.sql"), ("src", "daemon.c"), ("src", "ctl_refresh.c"), ("src", "engine.c")):
        t = read(*rel)
        found |= set(re.findall(r"pg_notify\(\s*'([a-z_]+)'", t))
    found |= set(re.findall(r'"(oauth_[a-z_]+)"', re.search(
        r"listen_channels\[\]\s*=\s*\{(.*?)\}", read("src", "daemon.c"), re.S).group(1)))
    # Channels named by a header's constant (e.g. the heartbeat of listen_check.h).
    for h in os.listdir(os.path.join(SRC, "include")):
        if h.endswith(".h"):
            found |= set(re.findall(r'#define \w+_CHANNEL\s+"(oauth_[a-z_]+)"', read("include", h)))
    return found


def split_top_level(args):
    """Splits SQL call arguments at commas outside parentheses."""
    out, depth, cur = [], 0, ""
    for ch in args:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return out


def test_every_channel_is_documented_with_json_examples_matching_the_sql(text):
    chans = channels_in_code()
    assert {"oauth_refresh_request", "oauth_refresh_event", "oauth_refreshd_account_changed"} <= chans, chans
    ch = sections(text["oauth-refreshd.8"])["CHANNELS"]
    documented = entries(ch)
    missing = sorted(c for c in chans if c not in documented)
    assert not missing, f"NOTIFY channels used by the code but not described under CHANNELS: {missing}"

    sql = read("sql", "oauth-refreshd.sql")
    # The payloads are built, compact, by oauth_refreshd.event_<name>() and sent by the
    # store functions: the keys are the '"key":' pieces of each builder's body.
    sent = {}
    for m in re.finditer(r"FUNCTION oauth_refreshd\.event_(\w+)\((?:(?!FUNCTION).)*?"
                         r"(?:AS \$\$(.*?)\$\$|BEGIN ATOMIC(.*?)\bEND;)", sql, re.S):
        name, body = m.group(1), m.group(2) or m.group(3)
        keys = re.findall(r'"(\w+)":', body)
        assert keys[0] == "event" and f'"event":"{name}"' in body, (
            f"event_{name}() must start its payload with \"event\":\"{name}\": {body}")
        sent[name] = set(keys)
        assert re.search(rf"pg_notify\('oauth_refresh_event',\s*oauth_refreshd\.event_{name}\(",
                         sql), f"event_{name}() is not sent on oauth_refresh_event"
    assert set(sent) == {"refreshed", "revoked", "failed"}, f"events parsed from the SQL: {sent}"
    examples = {}
    for line in ch.splitlines():
        line = line.strip()
        if line.startswith('{"event"'):
            obj = json.loads(line)
            examples[obj["event"]] = set(obj)
    for event, keys in sent.items():
        assert event in examples, f"no JSON example of the {event!r} event under CHANNELS"
        assert examples[event] == keys, (f"{event}: the example's fields {sorted(examples[event])} "
                                         f"differ from what the SQL sends {sorted(keys)}")


def test_every_sql_object_is_documented(text):
    sql = read("sql", "oauth-refreshd.sql")
    names = set(re.findall(
        r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:SCHEMA|TABLE|INDEX|FUNCTION|TRIGGER)\s+(?:IF\s+NOT\s+EXISTS\s+)?([\w.]+)",
        sql))
    assert "oauth_refreshd.account_state" in names and len(names) > 10, names
    db = words(sections(text["oauth-refreshd.8"])["DATABASE OBJECTS"])
    missing = sorted(n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?![\w])", db))
    assert not missing, f"SQL objects of sql/oauth-refreshd.sql not in DATABASE OBJECTS of oauth-refreshd(8): {missing}"


def test_every_file_and_credential_of_the_unit_is_documented(text):
    unit = read("systemd", "oauth-refreshd.service")
    files = words(sections(text["oauth-refreshd.8"])["FILES"])
    creds = re.findall(r"^LoadCredential=([^:\s]+):(\S+)", unit, re.M)
    assert creds, "expected LoadCredential= lines in the unit"
    for name, path in creds:
        assert name in files and path in files, (
            f"credential {name} from {path} (LoadCredential= of the unit) is not described under FILES")
    for m in re.finditer(r"^StateDirectory=(\S+)", unit, re.M):
        assert f"/var/lib/{m.group(1)}/" in files, f"state directory /var/lib/{m.group(1)} not under FILES"
    m = re.search(r"^ExecStart=(\S+)(?:.*\s-c\s+(\S+))?", unit, re.M)
    assert m.group(1) in files, f"the unit's binary {m.group(1)} is not under FILES"
    if m.group(2):
        assert m.group(2) in files, f"the unit's config {m.group(2)} is not under FILES"
    env = " ".join(entries(sections(text["oauth-refreshd.8"])["ENVIRONMENT"]))
    for var in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY"):
        assert var in env, f"{var} is not described under ENVIRONMENT"


# ---- cmake --install ----------------------------------------------------------------------------

EXPECTED_INSTALL = [
    "sbin/oauth-refreshd",
    "bin/oauth-refreshctl",
    "lib/systemd/system/oauth-refreshd.service",
    "share/doc/oauth-refreshd/examples/oauth-refreshd.conf",
    "share/oauth-refreshd/sql/oauth-refreshd.sql",
    "share/oauth-refreshd/prometheus/oauth-refreshd.rules.yml",
    "share/oauth-refreshd/grafana/oauth-refreshd.json",
    "share/man/man8/oauth-refreshd.8",
    "share/man/man1/oauth-refreshctl.1",
    "share/man/man5/oauth-refreshd.conf.5",
]


def test_cmake_install_lays_out_binaries_unit_config_sql_and_man_pages(built, tmp_path):
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", BUILD, "--prefix", str(prefix)])
    assert r.returncode == 0, f"cmake --install failed:\n{r.stdout}\n{r.stderr}"
    missing = [p for p in EXPECTED_INSTALL if not (prefix / p).is_file()]
    assert not missing, f"cmake --install --prefix P did not install: {missing}"
    for p in ("sbin/oauth-refreshd", "bin/oauth-refreshctl"):
        assert os.access(prefix / p, os.X_OK), f"{p} is not executable"
    with open(prefix / "share/man/man8/oauth-refreshd.8") as f:
        assert f.read().startswith(".\\\" Generated by scdoc"), "installed man page is not the scdoc output"


# ---- the Debian package -------------------------------------------------------------------------


def cmake_version():
    return re.search(r"project\(oauth-refreshd VERSION ([0-9.]+)", read("CMakeLists.txt")).group(1)


def skip_in_sanitizer_build():
    """The packages do not depend on this build dir: build them once, in the plain build."""
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            if re.search(r"^OAUTH_SANITIZE:BOOL=ON$", f.read(), re.M):
                pytest.skip("packages are built and checked in the non-sanitizer build only")
    except FileNotFoundError:
        pass


@pytest.fixture(scope="session")
def deb(tmp_path_factory):
    skip_in_sanitizer_build()
    for tool in ("dpkg-buildpackage", "dh", "dpkg-deb"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/lib/deps.sh installs dpkg-dev and debhelper)")
    out = tmp_path_factory.mktemp("deb")
    r = run([os.path.join(SRC, "packaging", "build-deb.sh"), str(out)], timeout=900)
    assert r.returncode == 0, f"packaging/build-deb.sh failed:\n{r.stdout}\n{r.stderr}"
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path) and path.endswith(".deb"), f"build-deb.sh printed {path!r}, not a .deb"
    return path


def deb_field(deb, field):
    return run(["dpkg-deb", "-f", deb, field]).stdout.strip()


def test_deb_has_the_project_version_and_is_named_for_it(deb):
    v = cmake_version()
    assert deb_field(deb, "Version") == v, f"package version {deb_field(deb, 'Version')} != CMake's {v}"
    assert os.path.basename(deb).startswith(f"oauth-refreshd_{v}_"), deb
    spec = read("packaging", "rpm", "oauth-refreshd.spec")
    assert re.search(rf"^Version:\s+{re.escape(v)}$", spec, re.M), f"the RPM spec's Version is not {v}"


def test_lintian_reports_no_errors_or_warnings(deb):
    if shutil.which("lintian") is None:
        pytest.skip("lintian is not installed (scripts/lib/deps.sh installs it)")
    r = run(["lintian", "--fail-on", "none", deb], timeout=600)
    tags = [l for l in r.stdout.splitlines() if re.match(r"^[EW]: ", l)]
    assert not tags, "lintian found errors/warnings:\n" + "\n".join(tags) + "\n" + r.stderr


def deb_listing(deb):
    r = run(["dpkg-deb", "-c", deb])
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        out[parts[5].lstrip(".").rstrip("/") or "/"] = (parts[0], parts[1])
    return out


def test_deb_contains_binaries_unit_config_sql_man_pages_and_docs(deb):
    files = deb_listing(deb)
    want = [
        "/usr/sbin/oauth-refreshd", "/usr/bin/oauth-refreshctl",
        "/lib/systemd/system/oauth-refreshd.service",
        "/etc/oauth-refreshd/oauth-refreshd.conf", "/etc/oauth-refreshd/credentials",
        "/usr/share/oauth-refreshd/sql/oauth-refreshd.sql",
        "/usr/share/oauth-refreshd/prometheus/oauth-refreshd.rules.yml",
        "/usr/share/oauth-refreshd/grafana/oauth-refreshd.json",
        "/usr/share/man/man8/oauth-refreshd.8.gz", "/usr/share/man/man1/oauth-refreshctl.1.gz",
        "/usr/share/man/man5/oauth-refreshd.conf.5.gz",
        "/usr/share/doc/oauth-refreshd/copyright", "/usr/share/doc/oauth-refreshd/README.md",
        "/usr/share/doc/oauth-refreshd/examples/oauth-refreshd.conf",
    ]
    # dh_compress gzips documentation over 4 kB: either form is the document.
    missing = [w for w in want if w not in files and w + ".gz" not in files]
    assert not missing, f"dpkg-deb -c lacks {missing}; it lists {sorted(files)}"
    for doc in os.listdir(os.path.join(SRC, "docs")):
        if os.path.isfile(os.path.join(SRC, "docs", doc)):
            installed = f"/usr/share/doc/oauth-refreshd/{doc}"
            assert installed in files or installed + ".gz" in files, f"docs/{doc} is not in the package"


def test_deb_config_is_a_conffile_not_readable_by_others(deb):
    files = deb_listing(deb)
    mode, owner = files["/etc/oauth-refreshd/oauth-refreshd.conf"]
    assert mode == "-rw-r-----" and owner == "root/root", f"config is {mode} {owner}, expected -rw-r----- root/root"
    mode, owner = files["/etc/oauth-refreshd/credentials"]
    assert mode == "drwx------" and owner == "root/root", f"credentials dir is {mode} {owner}, expected drwx------"
    with tempfile.TemporaryDirectory() as d:
        assert run(["dpkg-deb", "-e", deb, d]).returncode == 0
        with open(os.path.join(d, "conffiles")) as f:
            conffiles = f.read().split()
        assert "/etc/oauth-refreshd/oauth-refreshd.conf" in conffiles, f"conffiles: {conffiles}"


def test_deb_gives_the_dynamic_user_the_group_of_the_config(deb):
    """0640 root:root cannot be read by DynamicUser=: postinst sets a group the unit gets."""
    with tempfile.TemporaryDirectory() as d:
        assert run(["dpkg-deb", "-x", deb, d]).returncode == 0
        assert run(["dpkg-deb", "-e", deb, os.path.join(d, "DEBIAN")]).returncode == 0
        with open(os.path.join(d, "DEBIAN", "postinst")) as f:
            postinst = f.read()
        group = re.search(r"addgroup --system --quiet (\S+)", postinst).group(1)
        assert group != "oauth-refreshd", "a static group named like the unit breaks DynamicUser= (217/USER)"
        assert f"chown root:{group} \"$CONF\"" in postinst and "chmod 0640" in postinst, postinst
        dropin = os.path.join(d, "lib/systemd/system/oauth-refreshd.service.d/debian-config-group.conf")
        with open(dropin) as f:
            assert re.search(rf"^SupplementaryGroups={re.escape(group)}$", f.read(), re.M), (
                f"the drop-in does not give the unit the group {group}")
        with open(os.path.join(d, "DEBIAN", "postrm")) as f:
            postrm = f.read()
        assert "/var/lib/private/oauth-refreshd" in postrm and f"delgroup --system --quiet {group}" in postrm


def test_deb_never_enables_or_starts_the_service(deb):
    with tempfile.TemporaryDirectory() as d:
        assert run(["dpkg-deb", "-e", deb, d]).returncode == 0
        with open(os.path.join(d, "postinst")) as f:
            postinst = f.read()
    assert "deb-systemd-invoke start" not in postinst and "$_dh_action" not in postinst, (
        f"postinst starts the service:\n{postinst}")
    # --no-enable: the only enable is the re-enable of a unit that was enabled.
    lines = postinst.splitlines()
    for i, line in enumerate(lines):
        if "deb-systemd-helper enable" in line:
            opener = next(l for l in reversed(lines[:i]) if l.strip().startswith("if "))
            assert "was-enabled" in opener, (
                f"postinst enables the service outside `if ... was-enabled`:\n{postinst}")
    # Not restarted on upgrade either: the new daemon refuses a schema older than
    # its own, while the old one works on through `migrate` (README "Upgrading").
    assert "try-restart" not in postinst and "restart" not in postinst.replace(
        "--no-restart", ""), f"postinst restarts a running service on upgrade:\n{postinst}"


def test_deb_depends_on_what_the_unit_calls(deb):
    depends = deb_field(deb, "Depends")
    names = {re.split(r"[\s(]", d.strip())[0] for d in depends.split(",")}
    unit = read("systemd", "oauth-refreshd.service")
    for m in re.finditer(r"^Exec\w+=[-+!@:]*(/\S+)", unit, re.M):
        path = m.group(1)
        if path.endswith("/oauth-refreshd"):
            continue
        owner = run(["dpkg", "-S", path])
        assert owner.returncode == 0, f"cannot tell which package ships {path}: {owner.stderr}"
        pkg = owner.stdout.split(":")[0]
        assert pkg in names, f"the unit calls {path} (package {pkg}) but Depends is {depends}"
    assert "adduser" in names, f"postinst calls addgroup: expected Depends on adduser, saw {depends}"


def build_depends():
    ctl = read("packaging", "debian", "control")
    field = re.search(r"^Build-Depends:(.*?)^\S", ctl, re.M | re.S).group(1)
    return {re.split(r"[\s(]", d.strip())[0] for d in field.split(",") if d.strip()}


# Libraries found with find_package() have no .pc file to ask dpkg about.
FIND_PACKAGE_DEBIAN = {"Libev": "libev-dev", "PkgConfig": "pkg-config"}
# Fedora's names for the Debian -dev packages, for the RPM's BuildRequires.
FEDORA = {
    "libev-dev": "libev-devel", "libpq-dev": "libpq-devel", "libcurl4-openssl-dev": "libcurl-devel",
    "libjansson-dev": "jansson-devel", "libsodium-dev": "libsodium-devel",
    "libsystemd-dev": "systemd-devel", "libssl-dev": "openssl-devel", "libinih-dev": "inih-devel",
    "libmicrohttpd-dev": "libmicrohttpd-devel",
}


def test_build_depends_cover_every_library_cmake_looks_for():
    cm = read("CMakeLists.txt")
    needed = {"cmake", "scdoc", "debhelper-compat"}
    for name in re.findall(r"^\s*find_package\((\w+)", cm, re.M):
        if name in ("GNUInstallDirs",):
            continue
        assert name in FIND_PACKAGE_DEBIAN, f"find_package({name}): add its Debian package to FIND_PACKAGE_DEBIAN"
        needed.add(FIND_PACKAGE_DEBIAN[name])
    for m in re.finditer(r"pkg_check_modules\(\w+\s+(?:REQUIRED\s+)?(?:IMPORTED_TARGET\s+)?([\w.+-]+)", cm):
        module = re.split(r"[<>=]", m.group(1))[0]
        pcdir = run(["pkg-config", "--variable=pcfiledir", module]).stdout.strip()
        assert pcdir, f"pkg-config does not know {module}"
        owner = run(["dpkg", "-S", os.path.join(pcdir, module + ".pc")])
        assert owner.returncode == 0, f"no Debian package ships {module}.pc: {owner.stderr}"
        needed.add(owner.stdout.split(":")[0])
    have = build_depends()
    missing = sorted(needed - have)
    assert not missing, f"CMakeLists.txt needs {missing}, missing from Build-Depends of packaging/debian/control"
    spec = read("packaging", "rpm", "oauth-refreshd.spec")
    for dev in sorted(needed):
        if dev in FEDORA:
            assert re.search(rf"^BuildRequires:\s+{re.escape(FEDORA[dev])}\b", spec, re.M), (
                f"{dev} has no BuildRequires: {FEDORA[dev]} in the RPM spec")
        elif dev.endswith("-dev"):
            pytest.fail(f"{dev}: add its Fedora name to FEDORA here and a BuildRequires to the spec")


# ---- the RPM ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rpm(tmp_path_factory):
    skip_in_sanitizer_build()
    if shutil.which("rpmbuild") is None:
        pytest.skip("rpmbuild is not installed (scripts/lib/deps.sh installs rpm)")
    out = tmp_path_factory.mktemp("rpm")
    r = run([os.path.join(SRC, "packaging", "build-rpm.sh"), str(out)], timeout=900)
    assert r.returncode == 0, f"packaging/build-rpm.sh failed:\n{r.stdout}\n{r.stderr}"
    path = r.stdout.strip().splitlines()[-1]
    assert os.path.isfile(path) and path.endswith(".rpm"), f"build-rpm.sh printed {path!r}"
    return path


def test_rpm_contains_the_same_layout_with_a_private_config(rpm):
    r = run(["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}\n]", rpm])
    assert r.returncode == 0, r.stderr
    files = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        files[parts[0]] = parts[1:]
    for want in ("/usr/sbin/oauth-refreshd", "/usr/bin/oauth-refreshctl",
                 "/usr/lib/systemd/system/oauth-refreshd.service",
                 "/usr/share/oauth-refreshd/sql/oauth-refreshd.sql"):
        assert want in files, f"the RPM lacks {want}: {sorted(files)}"
    for page in ("man8/oauth-refreshd.8", "man1/oauth-refreshctl.1", "man5/oauth-refreshd.conf.5"):
        assert any(f.startswith(f"/usr/share/man/{page}") for f in files), f"the RPM lacks {page}"
    conf = files.get("/etc/oauth-refreshd/oauth-refreshd.conf")
    assert conf and conf[0] == "-rw-r-----" and conf[1].startswith("root:oauth-refreshd-conf"), conf
    assert "c" in conf[2] and "n" in conf[2], f"config is not %config(noreplace): {conf}"
    creds = files.get("/etc/oauth-refreshd/credentials")
    assert creds and creds[0] == "drwx------", creds


def test_rpm_has_systemd_scriptlets(rpm):
    r = run(["rpm", "-qp", "--scripts", rpm])
    assert r.returncode == 0, r.stderr
    s = r.stdout
    for part in ("preinstall", "postinstall", "preuninstall", "postuninstall"):
        assert f"{part} scriptlet" in s, f"the RPM has no {part} scriptlet:\n{s}"
    assert "daemon-reload" in s and "disable --now" in s, s
    assert "try-restart" not in s, f"the RPM restarts a running service on upgrade:\n{s}"
    assert not re.search(r"systemctl\s+(--\S+\s+)*(start|enable)\b", s), f"the RPM starts or enables the service:\n{s}"
