"""A pause ends (issue 10 part 7, second bullet; SPEC §6). After a 429 with Retry-After the
provider is paused; when the pause ends one job goes out as the half-open probe. Before the
fix a probe whose answer was a bad_response (one account's malformed JSON) neither resumed
nor re-paused the provider and left `probing` set, so the provider stayed paused for good
while its accounts were due. Whatever way a probe ends, the next job may probe."""

import time

from lib.daemon import wait_until

RETRY_MAX_S = 10


def test_a_malformed_answer_to_the_probe_does_not_keep_the_provider_paused(
        migrated_env, seeder, token_server):
    migrated_env.write_config({
        "refresh": {"scan_interval": "1h", "retry_min": "1s", "retry_max": f"{RETRY_MAX_S}s"},
        # One request at a time: the 429 answers the first account, the probe is the second.
        "provider.google": {"max_in_flight": 1},
    })
    first = seeder.add_account("google", expires_in=-600)   # due first: gets the 429
    broken = seeder.add_account("google", expires_in=-300)  # due next: the probe
    token_server.inject("not_json", provider="google", account=broken.account_key, count=None)
    token_server.inject("429", provider="google", count=1, retry_after=3)
    d = migrated_env.daemon("probe")
    d.start()
    d.wait_for_log(r"provider google paused for 3s after (rate limiting|http_429)", timeout=30)
    pause_end = time.monotonic() + 3
    healthy = seeder.add_accounts(50, "google", expires_in=-60)

    wait_until(lambda: token_server.requests_for(broken.account_key), timeout=15,
               message=f"the probe (the account with malformed answers)\n{d.log_tail()}")
    left = max(1.0, pause_end + RETRY_MAX_S - time.monotonic())
    wait_until(lambda: all(token_server.refresh_count(a.account_key) == 1 for a in healthy),
               timeout=left,
               message=f"all 50 healthy google accounts refreshed within retry_max "
                       f"({RETRY_MAX_S}s) of the pause's end\n{d.log_tail()}")
    assert token_server.refresh_count(first.account_key) <= 1
    d.terminate()
    assert d.returncode == 0, d.log_tail()
