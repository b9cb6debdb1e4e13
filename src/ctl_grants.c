/*
 * ctl_grants.c — `oauth-refreshctl grants ROLE`: the SQL that gives a
 * database role exactly what the daemon (and oauth-refreshctl run as that
 * role) needs, printed for psql: `oauth-refreshctl grants oauth_refreshd |
 * psql APP_DB` is the whole set-up. It connects to nothing and reads no
 * configuration. What the role gets, and why:
 *   - USAGE on the schemas public and oauth_refreshd;
 *   - SELECT on the columns of oauth_accounts it reads (never provider_account_id,
 *     created_at, nor any other table of the application: users,
 *     user_profiles, the auth tables stay closed);
 *   - UPDATE on only the columns SPEC §5 lets it write;
 *   - its own tables (claims and state, the version, key rotation progress);
 *   - EXECUTE on its functions (revoked from PUBLIC by migrate).
 * It must never print anything but SQL on stdout, and quotes the role name as
 * an identifier whatever it holds.
 */
#include <stdio.h>
#include <string.h>

#include "ctl.h"

#define PROG "oauth-refreshctl"
/* PostgreSQL truncates identifiers to NAMEDATALEN - 1 bytes. */
#define ROLE_NAME_MAX 63

/* Each statement is text, then the quoted role, then ";". */
static const char *const grants_sql[] = {
    "GRANT USAGE ON SCHEMA public TO ",
    "GRANT SELECT (id, user_id, provider, access_token, refresh_token, id_token, expires_at,\n"
    "              token_type, scope, updated_at) ON public.oauth_accounts TO ",
    "GRANT UPDATE (access_token, refresh_token, id_token, expires_at, scope, token_type,\n"
    "              updated_at) ON public.oauth_accounts TO ",
    "GRANT USAGE ON SCHEMA oauth_refreshd TO ",
    "GRANT SELECT, INSERT, UPDATE ON oauth_refreshd.account_state TO ",
    "GRANT SELECT ON oauth_refreshd.meta TO ",
    "GRANT SELECT, INSERT, UPDATE ON oauth_refreshd.rotation_progress TO ",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA oauth_refreshd TO ",
};

static void grants_usage(FILE *out)
{
    fprintf(out, "Usage: " PROG " grants ROLE\n"
                 "Prints the GRANT statements that let ROLE run oauth-refreshd (and " PROG
                 "),\nand nothing more; run them as the owner of oauth_accounts after "
                 "`" PROG " migrate`:\n  " PROG " grants oauth_refreshd | psql APP_DB\n");
}

/* The role as a double-quoted identifier ("" inside doubled); false if unusable. */
static bool quote_role(const char *role, char *out, size_t outlen)
{
    size_t n = strlen(role);
    if (n == 0 || n > ROLE_NAME_MAX)
        return false;
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (o + 3 >= outlen)
            return false;
        if (role[i] == '"')
            out[o++] = '"';
        out[o++] = role[i];
    }
    out[o++] = '"';
    out[o] = '\0';
    return true;
}

int ctl_grants(const struct ctl_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        grants_usage(stdout);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, PROG " grants: give exactly one role name\n");
        grants_usage(stderr);
        return EXIT_USAGE;
    }
    char role[2 * ROLE_NAME_MAX + 3];
    if (!quote_role(argv[1], role, sizeof role)) {
        fprintf(stderr, PROG " grants: '%s' is not a usable role name (1 to %d bytes)\n", argv[1],
                ROLE_NAME_MAX);
        return EXIT_USAGE;
    }
    printf("-- The privileges oauth-refreshd needs, and no more (" PROG " grants).\n"
           "-- Run as the owner of public.oauth_accounts after `" PROG " migrate`.\n"
           "BEGIN;\n");
    for (size_t i = 0; i < ARRAY_LEN(grants_sql); i++) {
        printf("%s%s;\n", grants_sql[i], role);
    }
    printf("COMMIT;\n");
    return fflush(stdout) == 0 ? 0 : EXIT_WORK_FAILED;
}
