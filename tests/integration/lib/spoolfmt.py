"""The durable spool's line format (docs/architecture.md, "The spool"), written by an
independent implementation: Python's hashlib as the keyed BLAKE2b. Tests use it to prove
the daemon replays what the documentation describes, and to write lines that verify but
are not valid results.

Owns: nothing but the format. Must never: be used by the daemon's code paths.
"""

import base64
import hashlib


def spool_text(s):
    return "-" if s is None else ":" + base64.urlsafe_b64encode(s.encode()).decode()


def spool_tag(raw_key, body):
    tag = hashlib.blake2b(body.encode(), key=raw_key, person=b"oauthrd-spool-v2",
                          digest_size=32).digest()
    return base64.urlsafe_b64encode(tag).decode()


def spool_provider(provider):
    """0, 1, 2 for google, github, microsoft; any other provider by its name (a str)."""
    if isinstance(provider, str):
        assert provider[:1].isalpha(), provider
        return provider
    assert provider in (0, 1, 2), provider
    return "%d" % provider


def spool_line(raw_key, account_id, provider, expires_usec, old_rt, access, rt, id_token=None,
               scope=None, token_type=None):
    """One line: "S2 id provider expiry_usec old access refresh id_token scope token_type tag"."""
    body = "S2 %d %s %d %s %s %s %s %s %s " % (account_id, spool_provider(provider), expires_usec,
                                               old_rt, access, rt, id_token or "-",
                                               spool_text(scope), spool_text(token_type))
    return body + spool_tag(raw_key, body) + "\n"


def spool_partial_line(raw_key, account_id, provider, retry_usec, old_rt, rt, id_token=None,
                       error="missing_access_token"):
    """A partial result (a rotated refresh token from an answer that is otherwise unusable):
    "P2 id provider retry_usec old refresh id_token error tag"; the database keeps the
    access token and expiry it has, and records the failed attempt (error, retry time)."""
    body = "P2 %d %s %d %s %s %s %s " % (account_id, spool_provider(provider), retry_usec,
                                         old_rt, rt, id_token or "-", spool_text(error))
    return body + spool_tag(raw_key, body) + "\n"
