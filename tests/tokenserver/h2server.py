#!/usr/bin/python3
"""A tiny HTTP/2 token endpoint that answers before it has read the whole request body and
then resets the stream with RST_STREAM(NO_ERROR), as nginx does (issue 10, part 7).

RFC 9113 §8.1: a server may send a complete response before the client has sent the whole
request, then RST_STREAM with NO_ERROR; clients MUST NOT discard such a response. curl 7.88
reports CURLE_HTTP2_STREAM (92) for it when it still had request body to send.

How the early answer is made certain: the server's SETTINGS give every stream an initial
window of 0 bytes, and it then opens the window a few bytes at a time, so the client can only
send its body in small pieces and never finishes it before the answer. It answers as soon as it
has read what it needs (for the token endpoint: a whole "refresh_token=...&" field; form bodies
put client_id/client_secret after it), and resets the stream right after the answer.

What it owns: TLS on loopback (ALPN h2 only), one thread per connection, a GitHub-style
rotating account registry (register(token) -> every valid refresh rotates; a dead token gets
200 {"error": "bad_refresh_token"}), and a record of every request (path, whether the body was
complete when the answer went out, what it answered). It never decides a verdict.

Modes (H2Server.mode; tests switch it between requests):
    complete            HEADERS with content-length + DATA with END_STREAM, then RST_STREAM(NO_ERROR)
    complete_nolength   the same without content-length
    midbody             HEADERS with content-length + the first half of the body, then
                        RST_STREAM(NO_ERROR): an incomplete answer
    midbody_nolength    the same without content-length
    normal              reads the whole request first, answers, no reset (control)

Paths: /token (the rotating endpoint; needs refresh_token in the form), anything else answers
the fixed body FIXED_BODY (for the http adapter probe, whose body has no refresh token; it
answers after the first 8 bytes of the body).
"""

import json
import secrets
import socket
import ssl
import threading
import time
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

MODES = ("complete", "complete_nolength", "midbody", "midbody_nolength", "normal")
FIXED_BODY = json.dumps({"access_token": "h2-fixed-access-token", "token_type": "bearer",
                         "expires_in": 28800, "scope": ""}).encode()
WINDOW_STEP = 8  # bytes of request body let in at a time


class _Stream:
    def __init__(self, sid, headers):
        self.sid = sid
        self.headers = headers
        self.body = b""
        self.ended = False
        self.answered = False


class H2Server:
    def __init__(self, cert, key, host="127.0.0.1", mode="complete", reset_delay=0.05):
        self.cert, self.key, self.host, self.mode = cert, key, host, mode
        # The reset goes out this long after the answer, in its own write, as nginx's does
        # (it finalizes the request after the last DATA frame). In the same TLS read as the
        # answer, curl 7.88 handles the close in its send path and never hands the answer
        # over at all (status 0, no body): nothing above curl can recover that.
        self.reset_delay = reset_delay
        self.open_window_at_reset = True
        self.lock = threading.Lock()
        self.current = {}       # account -> live refresh token
        self.owner = {}         # any issued refresh token -> account
        self.records = []       # one dict per answered request
        self.access_tokens = {}  # account -> [issued access tokens]
        self._stop = threading.Event()
        self._threads = []

    # ---- accounts ------------------------------------------------------------------------
    def register(self, account):
        """A new account with a fresh refresh token; returns the token."""
        with self.lock:
            rt = "ghr_" + secrets.token_urlsafe(54)
            self.current[account] = rt
            self.owner[rt] = account
            self.access_tokens[account] = []
            return rt

    def current_refresh_token(self, account):
        with self.lock:
            return self.current[account]

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(self.cert, self.key)
        self.ctx.set_alpn_protocols(["h2"])
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        self.sock.close()

    def url(self, path="/token"):
        return f"https://{self.host}:{self.port}{path}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                raw, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            t.start()
            self._threads.append(t)

    # ---- one connection ------------------------------------------------------------------
    def _serve(self, raw):
        try:
            raw.settimeout(10)
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding="utf-8"))
        conn.initiate_connection()
        # In force once the client acknowledges it: a request sent before that may carry its
        # whole body at once (it is then not answered early; records say so).
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
        streams = {}
        self._resets = []  # (deadline, stream id): RST_STREAM(NO_ERROR) due then
        try:
            tls.sendall(conn.data_to_send())
            tls.settimeout(0.01)
            while not self._stop.is_set():
                data = None
                try:
                    data = tls.recv(65536)
                    if not data:
                        break
                except socket.timeout:
                    pass
                if data:
                    for ev in conn.receive_data(data):
                        self._on_event(conn, streams, ev)
                self._due_resets(conn)
                out = conn.data_to_send()
                if out:
                    tls.sendall(out)
        except (OSError, ssl.SSLError, h2.exceptions.ProtocolError):
            pass  # the client went away or broke the protocol: this connection ends
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def _on_event(self, conn, streams, ev):
        if isinstance(ev, h2.events.RequestReceived):
            st = streams[ev.stream_id] = _Stream(ev.stream_id, dict(ev.headers))
            if ev.stream_ended:
                st.ended = True
            self._progress(conn, st)
        elif isinstance(ev, h2.events.DataReceived):
            st = streams.get(ev.stream_id)
            if st is None or st.answered:
                return
            st.body += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            if ev.stream_ended:
                st.ended = True
            self._progress(conn, st)
        elif isinstance(ev, h2.events.StreamEnded):
            st = streams.get(ev.stream_id)
            if st is not None and not st.answered:
                st.ended = True
                self._progress(conn, st)
        elif isinstance(ev, h2.events.StreamReset):
            streams.pop(ev.stream_id, None)

    def _progress(self, conn, st):
        """Answers once enough of the body is in; else lets a few more bytes in."""
        if st.answered:
            return
        path = st.headers.get(":path", "")
        if self.mode == "normal":
            ready = st.ended
        elif path.startswith("/token"):
            ready = st.ended or _whole_field(st.body, b"refresh_token")
        else:
            ready = st.ended or len(st.body) >= 8
        if ready:
            self._answer(conn, st, path)
        else:
            try:
                conn.increment_flow_control_window(WINDOW_STEP, stream_id=st.sid)
            except h2.exceptions.StreamClosedError:
                pass

    def _due_resets(self, conn):
        now = time.monotonic()
        for item in [r for r in self._resets if r[0] <= now]:
            self._resets.remove(item)
            try:
                if self.open_window_at_reset:
                    conn.increment_flow_control_window(65535, stream_id=item[1])
                conn.reset_stream(item[1], h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass

    def _token_body(self, body):
        form = dict(urllib.parse.parse_qsl(body.decode(errors="replace")))
        rt = form.get("refresh_token", "")
        with self.lock:
            acct = self.owner.get(rt)
            if acct is None or self.current.get(acct) != rt:
                return acct, {"error": "bad_refresh_token",
                              "error_description": "The refresh token passed is incorrect or "
                                                   "expired."}
            new_rt = "ghr_" + secrets.token_urlsafe(54)
            access = "ghu_" + secrets.token_urlsafe(27)
            self.current[acct] = new_rt
            self.owner[new_rt] = acct
            self.access_tokens[acct].append(access)
        return acct, {"access_token": access, "expires_in": 28800, "refresh_token": new_rt,
                      "refresh_token_expires_in": 15811200, "scope": "", "token_type": "bearer"}

    def _answer(self, conn, st, path):
        st.answered = True
        mode = self.mode
        acct = None
        if path.startswith("/token"):
            acct, obj = self._token_body(st.body)
            body = json.dumps(obj).encode()
        else:
            body = FIXED_BODY
        headers = [(":status", "200"), ("content-type", "application/json")]
        if mode in ("complete", "midbody", "normal"):
            headers.append(("content-length", str(len(body))))
        conn.send_headers(st.sid, headers)
        if mode.startswith("midbody"):
            conn.send_data(st.sid, body[:len(body) // 2], end_stream=False)
            self._resets.append((time.monotonic() + self.reset_delay, st.sid))
        else:
            conn.send_data(st.sid, body, end_stream=True)
            if mode != "normal" and not st.ended:
                # Half-closed (local): the client is still sending. RFC 9113 §8.1.
                self._resets.append((time.monotonic() + self.reset_delay, st.sid))
        with self.lock:
            self.records.append({"path": path, "mode": mode, "account": acct,
                                 "body_complete": st.ended, "answer": body.decode()})


def _whole_field(body, name):
    """True once body holds name=VALUE followed by '&' (the value is whole)."""
    return any(f.startswith(name + b"=") for f in body.split(b"&")[:-1])
