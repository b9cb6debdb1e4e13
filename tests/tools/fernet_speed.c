/*
 * fernet_speed.c — prints how long one Fernet encryption and one decryption
 * take for token sizes the daemon handles (a GitHub refresh token, a Microsoft
 * JWT access token). A micro-benchmark for profiling work on fernet.c and b64.c:
 * the machine is shared, so it reports the best of several rounds. "fresh"
 * creates OpenSSL contexts per call; "engine" reuses them as a keyring does.
 * Usage: fernet_speed [rounds]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "fernet.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    if (sodium_init() < 0 || rounds < 1)
        return 1;
    struct fernet_key key;
    randombytes_buf(&key, sizeof key);
    const size_t sizes[] = {40, 1400, 4000};
    const int per_round = 20000;
    struct fernet_engine *eng = fernet_engine_new();
    if (eng == NULL)
        return 1;
    for (int use_engine = 0; use_engine < 2; use_engine++)
        for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
            struct fernet_engine *e = use_engine ? eng : NULL;
            uint8_t *plain = malloc(sizes[s]);
            randombytes_buf(plain, sizes[s]);
            double best_enc = 1e18, best_dec = 1e18;
            for (int r = 0; r < rounds; r++) {
                char *tok = NULL;
                double t0 = now_us();
                for (int i = 0; i < per_round; i++) {
                    free(tok);
                    tok = NULL;
                    if (fernet_encrypt_with(e, &key, plain, sizes[s], 1795800000, NULL, &tok) < 0)
                        return 1;
                }
                double t1 = now_us();
                for (int i = 0; i < per_round; i++) {
                    struct secret out = {0};
                    char err[128];
                    if (fernet_decrypt_keys_with(e, &key, 1, tok, strlen(tok), 0, 0, &out, NULL,
                                                 err, sizeof err) < 0)
                        return 1;
                    secret_clear(&out);
                }
                double t2 = now_us();
                free(tok);
                if ((t1 - t0) / per_round < best_enc)
                    best_enc = (t1 - t0) / per_round;
                if ((t2 - t1) / per_round < best_dec)
                    best_dec = (t2 - t1) / per_round;
            }
            printf("%-6s %5zu bytes: encrypt %.2f us, decrypt %.2f us (best of %d x %d)\n",
                   use_engine ? "engine" : "fresh", sizes[s], best_enc, best_dec, rounds,
                   per_round);
            free(plain);
        }
    fernet_engine_free(eng);
    return 0;
}
