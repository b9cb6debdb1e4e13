"""The http adapter (src/http.c) against real loopback servers.

tests/tools/http_probe drives http.c on a libev loop exactly as the daemon
does. This file starts its own small aiohttp servers (HTTPS with a throwaway CA
made here, a second CA the probe must not trust, a certificate for the wrong
name, and plain HTTP) and proves the adapter's promises: every request
completes exactly once and gets its own answer, TLS is always verified, http://
is refused unless allowed, redirects are not followed, the body cap holds, the
total timeout fires on a stalled server, Retry-After is captured, a reset
connection is a transport error, and abort_all completes everything once.

Self-contained on purpose: it does not use the shared token-server fixtures.
"""

import asyncio
import collections
import datetime
import ipaddress
import json
import os
import socket
import ssl
import struct
import subprocess
import threading

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CURLE_UNSUPPORTED_PROTOCOL = 1
CURLE_PARTIAL_FILE = 18
CURLE_WRITE_ERROR = 23
CURLE_OPERATION_TIMEDOUT = 28
CURLE_ABORTED_BY_CALLBACK = 42
CURLE_GOT_NOTHING = 52
CURLE_RECV_ERROR = 56
CURLE_PEER_FAILED_VERIFICATION = 60
CURLE_FILESIZE_EXCEEDED = 63
CURLE_HTTP2_STREAM = 92

BIG = 10 * 1024 * 1024


def probe_path():
    build = os.environ.get("OAUTH_BUILD_DIR")
    assert build, "OAUTH_BUILD_DIR must point at the build directory (ctest sets it)"
    path = os.path.join(build, "tests", "tools", "http_probe")
    assert os.access(path, os.X_OK), f"expected the probe at {path}; build target http_probe"
    return path


# ---------------------------------------------------------------- certificates


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert, san):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("test server"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def write_pem(path, cert=None, key=None):
    with open(path, "wb") as f:
        if cert is not None:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        if key is not None:
            f.write(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))


def server_context(tmp, name, ca_key, ca_cert, san):
    key, cert = make_leaf(ca_key, ca_cert, san)
    path = os.path.join(tmp, f"{name}.pem")
    write_pem(path, cert=cert, key=key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(path)
    return ctx


# ---------------------------------------------------------------- the server


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.hits = collections.Counter()  # path -> count
        self.ids = collections.Counter()   # request index "i" -> count (for /echo*)

    def hit(self, path, body=None):
        with self.lock:
            self.hits[path] += 1
            if body is not None:
                for part in body.split("&"):
                    if part.startswith("i="):
                        self.ids[part[2:]] += 1


def make_app(rec):
    async def echo(request):
        body = await request.text()
        rec.hit(request.path, body)
        ms = int(request.query.get("ms", "0"))
        if ms:
            await asyncio.sleep(ms / 1000.0)
        return web.json_response({"echo": body})

    async def redirect(request):
        rec.hit(request.path)
        raise web.HTTPFound("/target")

    async def target(request):
        rec.hit(request.path)
        return web.json_response({"reached": True})

    async def sized(request):
        rec.hit(request.path)
        n = int(request.query["n"])
        return web.Response(body=b"x" * n, content_type="application/json")

    async def big_chunked(request):
        rec.hit(request.path)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        chunk = b"y" * 65536
        try:
            for _ in range(BIG // len(chunk)):
                await resp.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            pass
        return resp

    async def stall(request):
        rec.hit(request.path)
        await asyncio.sleep(30)
        return web.json_response({})

    async def retry_delta(request):
        rec.hit(request.path)
        return web.json_response({"error": "slow_down"}, status=429,
                                 headers={"Retry-After": "120"})

    async def retry_date(request):
        rec.hit(request.path)
        return web.json_response({}, status=503,
                                 headers={"Retry-After": "Wed, 21 Oct 2037 07:28:00 GMT"})

    async def reset(request):
        rec.hit(request.path)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = 50000
        await resp.prepare(request)
        await resp.write(b'{"access_token":"' + b"z" * 1000)
        sock = request.transport.get_extra_info("socket")
        # SO_LINGER 0: close() sends a TCP RST instead of a FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()
        return resp

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_post("/redirect", redirect)
    app.router.add_post("/target", target)
    app.router.add_get("/target", target)
    app.router.add_post("/sized", sized)
    app.router.add_post("/big-chunked", big_chunked)
    app.router.add_post("/stall", stall)
    app.router.add_post("/retry-delta", retry_delta)
    app.router.add_post("/retry-date", retry_date)
    app.router.add_post("/reset", reset)
    return app


class Servers:
    """Four listeners on one event loop in a background thread."""

    def __init__(self, tmp):
        self.rec = Recorder()
        ca_key, ca_cert = make_ca("oauth-refreshd test CA")
        rogue_key, rogue_cert = make_ca("rogue CA")
        self.ca_file = os.path.join(tmp, "ca.pem")
        write_pem(self.ca_file, cert=ca_cert)
        ip = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        self.contexts = {
            "good": server_context(tmp, "good", ca_key, ca_cert, ip),
            "rogue": server_context(tmp, "rogue", rogue_key, rogue_cert, ip),
            "wrongname": server_context(tmp, "wrongname", ca_key, ca_cert,
                                        [x509.DNSName("not-this-host.example")]),
            "plain": None,
        }
        self.ports = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "test servers did not start"

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(make_app(self.rec), handle_signals=False)
        self.loop.run_until_complete(self.runner.setup())
        for name, ctx in self.contexts.items():
            site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ctx, backlog=1024,
                               shutdown_timeout=0.5)
            self.loop.run_until_complete(site.start())
            self.ports[name] = site._server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    def url(self, server, path):
        scheme = "http" if server == "plain" else "https"
        return f"{scheme}://127.0.0.1:{self.ports[server]}{path}"

    async def _shutdown(self):
        await self.runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self):
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop)
        try:
            fut.result(10)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    s = Servers(str(tmp_path_factory.mktemp("http-adapter")))
    yield s
    s.close()


def run_probe(url, *args, timeout=120):
    cmd = [probe_path(), *args, url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    lines = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    assert lines and lines[-1].get("summary"), \
        f"probe printed no summary; rc={p.returncode} stderr={p.stderr!r}"
    return p.returncode, lines[:-1], lines[-1]


def only(results):
    assert len(results) == 1, f"expected one completion line, seen {len(results)}: {results}"
    return results[0]


# ---------------------------------------------------------------- tests


def test_many_concurrent_requests_each_complete_exactly_once_with_their_own_answer(servers):
    n = 3000
    rc, results, summary = run_probe(servers.url("good", "/echo?ms=5"), "-n", str(n),
                                     "-c", "300", "--max-connections", "32",
                                     "--ca-file", servers.ca_file, "--timeout-ms", "60000")
    assert rc == 0, f"expected exit 0, seen {rc}: {summary}"
    assert summary["completed"] == n and summary["duplicates"] == 0, summary
    assert summary["never_completed"] == 0 and summary["in_flight_at_end"] == 0, summary
    seen = collections.Counter(r["i"] for r in results)
    assert len(seen) == n and max(seen.values()) == 1, \
        f"expected each of {n} requests once, seen {len(seen)} distinct, max {max(seen.values())}"
    wrong = [r for r in results
             if r["status"] != 200 or r["transport_error"] != 0
             or json.loads(r["body"])["echo"] != f"i={r['i']}"]
    assert not wrong, f"expected 200 with its own echo for every request; first bad: {wrong[:3]}"
    assert all(r["http_version"] in (11, 20) for r in results)
    server_ids = servers.rec.ids
    missing = [i for i in range(n) if server_ids[str(i)] != 1]
    assert not missing, f"server expected each request once; off for {missing[:10]}"
    # Connection reuse: far fewer TLS handshakes than requests is not observable
    # here directly, but in-flight must have overlapped.
    assert max(r["in_flight"] for r in results) > 1


def test_certificate_from_another_ca_is_a_tls_error(servers):
    before = servers.rec.hits["/echo"]
    _, results, _ = run_probe(servers.url("rogue", "/echo"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["transport_error"] == CURLE_PEER_FAILED_VERIFICATION, \
        f"expected curl error 60 (peer verification), seen {r}"
    assert r["status"] == 0, f"expected no HTTP status, seen {r['status']}"
    assert servers.rec.hits["/echo"] == before, "nothing may be sent to an unverified server"


def test_certificate_for_another_name_is_a_tls_error(servers):
    _, results, _ = run_probe(servers.url("wrongname", "/echo"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["transport_error"] == CURLE_PEER_FAILED_VERIFICATION, \
        f"expected curl error 60 (host name mismatch), seen {r}"


def test_without_ca_file_the_test_ca_is_not_trusted(servers):
    _, results, _ = run_probe(servers.url("good", "/echo"))
    r = only(results)
    assert r["transport_error"] == CURLE_PEER_FAILED_VERIFICATION, \
        f"expected curl error 60 without the test CA, seen {r}"


def test_plain_http_is_refused_without_insecure(servers):
    before = servers.rec.hits["/echo"]
    _, results, _ = run_probe(servers.url("plain", "/echo"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["transport_error"] == CURLE_UNSUPPORTED_PROTOCOL, \
        f"expected curl error 1 (protocol refused), seen {r}"
    assert servers.rec.hits["/echo"] == before, "the refused request must not reach the server"


def test_plain_http_works_with_insecure(servers):
    _, results, _ = run_probe(servers.url("plain", "/echo"), "--insecure")
    r = only(results)
    assert r["transport_error"] == 0 and r["status"] == 200, f"expected 200, seen {r}"


def test_redirects_are_not_followed(servers):
    before = servers.rec.hits["/target"]
    _, results, _ = run_probe(servers.url("good", "/redirect"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["transport_error"] == 0 and r["status"] == 302, f"expected a bare 302, seen {r}"
    assert servers.rec.hits["/target"] == before, "the redirect target must not be requested"


def test_body_exactly_at_the_cap_is_accepted(servers):
    _, results, _ = run_probe(servers.url("good", "/sized?n=1000"), "--ca-file",
                              servers.ca_file, "--max-body", "1000")
    r = only(results)
    assert r["transport_error"] == 0 and not r["oversized"] and r["body_len"] == 1000, \
        f"expected 1000 bytes accepted, seen {r}"


def test_body_one_byte_over_the_cap_is_oversized(servers):
    _, results, _ = run_probe(servers.url("good", "/sized?n=1001"), "--ca-file",
                              servers.ca_file, "--max-body", "1000")
    r = only(results)
    assert r["oversized"] and r["transport_error"] in (CURLE_FILESIZE_EXCEEDED,
                                                        CURLE_WRITE_ERROR), \
        f"expected oversized, seen {r}"


def test_ten_megabyte_body_with_length_is_oversized(servers):
    _, results, _ = run_probe(servers.url("good", f"/sized?n={BIG}"), "--ca-file",
                              servers.ca_file)
    r = only(results)
    assert r["oversized"] and r["transport_error"] == CURLE_FILESIZE_EXCEEDED, \
        f"expected oversized via Content-Length, seen {r}"
    assert r["body_len"] <= 64 * 1024


def test_ten_megabyte_chunked_body_is_cut_off_at_the_cap(servers):
    rc, results, summary = run_probe(servers.url("good", "/big-chunked"), "--ca-file",
                                     servers.ca_file, "-n", "4", "-c", "4")
    assert rc == 0, summary
    for r in results:
        assert r["oversized"] and r["transport_error"] == CURLE_WRITE_ERROR, \
            f"expected the write callback to stop the body, seen {r}"
        assert r["body_len"] <= 64 * 1024, f"expected at most the cap kept, seen {r['body_len']}"


def test_total_timeout_fires_on_a_stalled_server(servers):
    rc, results, summary = run_probe(servers.url("good", "/stall"), "--ca-file",
                                     servers.ca_file, "--timeout-ms", "700", "-n", "3",
                                     timeout=30)
    assert rc == 0, summary
    for r in results:
        assert r["transport_error"] == CURLE_OPERATION_TIMEDOUT, f"expected timeout, seen {r}"
        assert 600 <= r["elapsed_ms"] < 3000, f"expected ~700 ms, seen {r['elapsed_ms']}"


def test_retry_after_seconds_is_captured(servers):
    _, results, _ = run_probe(servers.url("good", "/retry-delta"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["status"] == 429 and r["retry_after"] == "120", f"expected 429 + '120', seen {r}"


def test_retry_after_http_date_is_captured(servers):
    _, results, _ = run_probe(servers.url("good", "/retry-date"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["status"] == 503 and r["retry_after"] == "Wed, 21 Oct 2037 07:28:00 GMT", \
        f"expected 503 with the date, seen {r}"


def test_no_retry_after_means_none(servers):
    _, results, _ = run_probe(servers.url("good", "/echo"), "--ca-file", servers.ca_file)
    r = only(results)
    assert r["status"] == 200 and r["retry_after"] is None, f"expected no Retry-After, seen {r}"


def test_connection_reset_mid_body_is_a_transport_error(servers):
    rc, results, summary = run_probe(servers.url("good", "/reset"), "--ca-file",
                                     servers.ca_file, "-n", "3", "-c", "3")
    assert rc == 0, summary
    for r in results:
        assert r["transport_error"] in (CURLE_RECV_ERROR, CURLE_PARTIAL_FILE,
                                        CURLE_GOT_NOTHING), \
            f"expected a receive error after a reset, seen {r}"
        assert not r["oversized"]


def test_abort_all_completes_everything_in_flight_once(servers):
    rc, results, summary = run_probe(servers.url("good", "/stall"), "--ca-file",
                                     servers.ca_file, "-n", "20", "-c", "20",
                                     "--abort-after-ms", "300", timeout=30)
    assert rc == 0, summary
    assert summary["completed"] == 20 and summary["duplicates"] == 0, summary
    for r in results:
        assert r["transport_error"] == CURLE_ABORTED_BY_CALLBACK, f"expected abort, seen {r}"
        assert r["elapsed_ms"] < 5000


def test_probe_rejects_a_bad_command_line():
    p = subprocess.run([probe_path()], capture_output=True, text=True, timeout=30)
    assert p.returncode == 64, f"expected exit 64 without a URL, seen {p.returncode}"
