/*
 * test_provider_table.c — the classification table (provider_table.c) and its
 * picture in docs/providers.md. The document's table is parsed and compared
 * with the code's rows, row by row and cell by cell, so neither can change
 * alone. Then the table's own rules: every row can be reached (no earlier row
 * shadows it), the rows that need no JSON come first, the scope agrees with
 * the retry rule, and the last row catches any code. What each answer means
 * for each dialect is checked against hand-written answers in test_provider.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "provider_table.h"

#define DOC_PATH     TEST_SOURCE_DIR "/docs/providers.md"
#define TABLE_BEGIN  "<!-- classification-table:begin -->"
#define TABLE_END    "<!-- classification-table:end -->"
#define DOC_COLUMNS  12 /* #, the nine compared cells, meaning, source */
#define DOC_CELL_LEN 512
#define DOC_MAX_ROWS 200

struct doc_row {
    int line;
    char cell[DOC_COLUMNS][DOC_CELL_LEN];
};

static char *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open %s", path);
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    fclose(f);
    if (!buf)
        fail_msg("%s is empty", path);
    buf[len] = '\0';
    return buf;
}

/* Trims blanks and the backticks of inline code: `invalid_grant` and invalid_grant are one. */
static void cell_copy(char *dst, const char *src, size_t n)
{
    while (n > 0 && (*src == ' ' || *src == '`')) {
        src++;
        n--;
    }
    while (n > 0 && (src[n - 1] == ' ' || src[n - 1] == '`'))
        n--;
    if (n >= DOC_CELL_LEN)
        n = DOC_CELL_LEN - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Splits "| a | b |" into cells; returns how many. */
static int split_row(const char *line, size_t len, struct doc_row *row)
{
    int ncell = 0;
    const char *p = line, *end = line + len;
    if (p < end && *p == '|')
        p++;
    while (p < end) {
        const char *bar = memchr(p, '|', (size_t)(end - p));
        if (!bar)
            break;
        if (ncell < DOC_COLUMNS)
            cell_copy(row->cell[ncell], p, (size_t)(bar - p));
        ncell++;
        p = bar + 1;
    }
    return ncell;
}

/* The rows between the markers, without the header and its separator. */
static size_t doc_rows(const char *doc, struct doc_row *rows, size_t max)
{
    const char *begin = strstr(doc, TABLE_BEGIN);
    const char *end = strstr(doc, TABLE_END);
    if (!begin || !end || end < begin)
        fail_msg("%s: the table markers %s ... %s are missing", DOC_PATH, TABLE_BEGIN, TABLE_END);
    int lineno = 1;
    for (const char *c = doc; c < begin; c++)
        lineno += *c == '\n';
    size_t n = 0;
    int seen = 0;
    for (const char *p = strchr(begin, '\n'); p && p < end; lineno++) {
        const char *line = p + 1;
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        p = nl;
        if (len == 0 || line[0] != '|')
            continue;
        if (seen++ < 2)
            continue; /* header and separator */
        if (n == max)
            fail_msg("%s: more than %zu table rows", DOC_PATH, max);
        memset(&rows[n], 0, sizeof(rows[n]));
        rows[n].line = lineno + 1;
        int cells = split_row(line, len, &rows[n]);
        if (cells != DOC_COLUMNS)
            fail_msg("%s:%d: expected %d cells, saw %d", DOC_PATH, rows[n].line, DOC_COLUMNS,
                     cells);
        n++;
    }
    return n;
}

static const char *const column_names[RULE_COLUMNS] = {
    "dialect",          "status",  "Retry-After", "body",  "error",
    "AADSTS / subtype", "outcome", "scope",       "retry",
};

static void test_docs_table_matches_the_code_row_for_row(void **state)
{
    (void)state;
    char *doc = read_file(DOC_PATH);
    static struct doc_row rows[DOC_MAX_ROWS];
    size_t n = doc_rows(doc, rows, DOC_MAX_ROWS);
    if (n != provider_rules_count)
        fail_msg("%s has %zu rows, the code's table (provider_table.c) %zu", DOC_PATH, n,
                 provider_rules_count);
    for (size_t i = 0; i < n; i++) {
        char want[RULE_COLUMNS][RULE_CELL_LEN];
        provider_rule_cells(&provider_rules[i], want);
        char num[16];
        snprintf(num, sizeof(num), "%zu", i + 1);
        if (strcmp(rows[i].cell[0], num) != 0)
            fail_msg("%s:%d: row number \"%s\", expected %s", DOC_PATH, rows[i].line,
                     rows[i].cell[0], num);
        for (int c = 0; c < RULE_COLUMNS; c++)
            if (strcmp(rows[i].cell[c + 1], want[c]) != 0)
                fail_msg("%s:%d: row %zu, column %s: the document says \"%s\", the code \"%s\"",
                         DOC_PATH, rows[i].line, i + 1, column_names[c], rows[i].cell[c + 1],
                         want[c]);
        if (!rows[i].cell[RULE_COLUMNS + 1][0] || !rows[i].cell[RULE_COLUMNS + 2][0])
            fail_msg("%s:%d: row %zu needs its meaning and its source", DOC_PATH, rows[i].line,
                     i + 1);
    }
    free(doc);
}

/* ---- the table's own rules ---- */

static json_t *answer_for(const struct provider_rule *r)
{
    json_t *root = json_object();
    assert_non_null(root);
    json_object_set_new(root, "error", json_string(r->error ? r->error : "a_code_never_seen"));
    if (r->aadsts) {
        json_object_set_new(root, "error_codes", json_pack("[I]", (json_int_t)r->aadsts));
        char desc[64];
        snprintf(desc, sizeof(desc), "AADSTS%ld: text", r->aadsts);
        json_object_set_new(root, "error_description", json_string(desc));
    }
    if (r->subtype)
        json_object_set_new(root, "error_subtype", json_string(r->subtype));
    return root;
}

static const char *body_for(enum rule_body b)
{
    switch (b) {
    case BODY_HTML:
        return "<!DOCTYPE html><html><title>Error 403 (Forbidden)</title></html>";
    case BODY_RATE_LIMIT:
        return "{\"error\":{\"errors\":[{\"reason\":\"rateLimitExceeded\"}]}}";
    default:
        return "";
    }
}

/* The row found for an answer made to match row i, in dialect dialect. */
static const struct provider_rule *find_for(size_t i, int dialect)
{
    const struct provider_rule *r = &provider_rules[i];
    struct answer_facts f = {.dialect = dialect};
    json_t *root = NULL;
    if (r->body == BODY_JSON_ERROR) {
        root = answer_for(r);
        f.root = root;
        f.error = json_string_value(json_object_get(root, "error"));
        f.status = 400;
    } else {
        f.status = r->status_lo ? r->status_lo : 400;
        f.retry_after = r->retry_after;
        f.body = body_for(r->body);
        f.body_len = strlen(f.body);
    }
    const struct provider_rule *found = provider_rule_find(&f);
    json_decref(root);
    return found;
}

static void test_every_row_can_be_reached(void **state)
{
    (void)state;
    for (size_t i = 0; i < provider_rules_count; i++) {
        const struct provider_rule *r = &provider_rules[i];
        bool reached = false;
        for (int dialect = 0; dialect < PROVIDER_NAMED_COUNT && !reached; dialect++) {
            if (r->dialect != RULE_ANY_DIALECT && r->dialect != dialect)
                continue;
            reached = find_for(i, dialect) == r;
        }
        if (!reached)
            fail_msg("row %zu can never decide: an earlier row takes every answer it matches",
                     i + 1);
    }
}

static void test_rows_that_need_no_json_come_first(void **state)
{
    (void)state;
    bool json_seen = false;
    for (size_t i = 0; i < provider_rules_count; i++) {
        const struct provider_rule *r = &provider_rules[i];
        if (r->body == BODY_JSON_ERROR) {
            json_seen = true;
            /* The status is not known where JSON errors are read: GitHub errs with 200. */
            if (r->status_lo != 0 || r->retry_after)
                fail_msg("row %zu: a JSON error row must match any status and header", i + 1);
        } else {
            if (json_seen)
                fail_msg("row %zu looks at no JSON but comes after a JSON row", i + 1);
            if (r->error || r->aadsts || r->subtype)
                fail_msg("row %zu: error, AADSTS and subtype need a JSON error body", i + 1);
        }
    }
}

static void test_scope_agrees_with_outcome_and_retry(void **state)
{
    (void)state;
    for (size_t i = 0; i < provider_rules_count; i++) {
        const struct provider_rule *r = &provider_rules[i];
        bool provider_wide = r->retry == RETRY_PROBE || r->retry == RETRY_PAUSE;
        if ((r->scope == SCOPE_PROVIDER) != provider_wide)
            fail_msg("row %zu: scope %s with retry %s", i + 1, answer_scope_name(r->scope),
                     answer_retry_name(r->retry));
        if ((r->outcome == OUTCOME_REVOKED) != (r->retry == RETRY_RECONNECT))
            fail_msg("row %zu: revoked and reconnect go together", i + 1);
        if ((r->outcome == OUTCOME_CONFIG) != (r->retry == RETRY_PROBE))
            fail_msg("row %zu: config and probe go together", i + 1);
        if (r->retry == RETRY_PAUSE && r->outcome != OUTCOME_TRANSIENT)
            fail_msg("row %zu: only a transient answer pauses for overload", i + 1);
        if (r->outcome == OUTCOME_SUCCESS)
            fail_msg("row %zu: success is not decided by the table", i + 1);
    }
}

static void test_last_row_catches_every_json_error(void **state)
{
    (void)state;
    const struct provider_rule *last = &provider_rules[provider_rules_count - 1];
    assert_int_equal(last->body, BODY_JSON_ERROR);
    assert_null(last->error);
    assert_int_equal(last->outcome, OUTCOME_BAD_RESPONSE);
    json_t *root = json_pack("{s:s}", "error", "something_new");
    for (int dialect = 0; dialect < PROVIDER_NAMED_COUNT; dialect++) {
        struct answer_facts f = {
            .dialect = dialect, .status = 400, .root = root, .error = "something_new"};
        assert_ptr_equal(provider_rule_find(&f), last);
    }
    json_decref(root);
    /* Without a JSON error, an unlisted status is left to the caller. */
    struct answer_facts f = {.dialect = PROVIDER_GOOGLE, .status = 418, .body = "", .body_len = 0};
    assert_null(provider_rule_find(&f));
}

static void test_aadsts_number_is_read_from_codes_or_description_only_whole(void **state)
{
    (void)state;
    const char *bodies[] = {
        "{\"error\":\"unauthorized_client\",\"error_codes\":[1,700016]}",
        "{\"error\":\"unauthorized_client\",\"error_description\":\"AADSTS700016: gone\"}",
    };
    for (size_t i = 0; i < 2; i++) {
        json_t *root = json_loads(bodies[i], 0, NULL);
        assert_non_null(root);
        struct answer_facts f = {
            .dialect = PROVIDER_MICROSOFT, .root = root, .error = "unauthorized_client"};
        const struct provider_rule *r = provider_rule_find(&f);
        assert_non_null(r);
        assert_int_equal(r->outcome, OUTCOME_REVOKED);
        json_decref(root);
    }
    /* 7000160 is not 700016, nor is a number further inside the text. */
    const char *not_it[] = {
        "{\"error\":\"unauthorized_client\",\"error_codes\":[7000160]}",
        "{\"error\":\"unauthorized_client\",\"error_description\":\"AADSTS7000160: x\"}",
        "{\"error\":\"unauthorized_client\",\"error_description\":\"see AADSTS700016: x\"}",
        "{\"error\":\"unauthorized_client\",\"error_codes\":[\"700016\"]}",
    };
    for (size_t i = 0; i < 4; i++) {
        json_t *root = json_loads(not_it[i], 0, NULL);
        assert_non_null(root);
        struct answer_facts f = {
            .dialect = PROVIDER_MICROSOFT, .root = root, .error = "unauthorized_client"};
        const struct provider_rule *r = provider_rule_find(&f);
        assert_non_null(r);
        if (r->outcome != OUTCOME_CONFIG)
            fail_msg("%s: expected the provider-wide row, saw %s", not_it[i],
                     refresh_outcome_name(r->outcome));
        json_decref(root);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_docs_table_matches_the_code_row_for_row),
        cmocka_unit_test(test_every_row_can_be_reached),
        cmocka_unit_test(test_rows_that_need_no_json_come_first),
        cmocka_unit_test(test_scope_agrees_with_outcome_and_retry),
        cmocka_unit_test(test_last_row_catches_every_json_error),
        cmocka_unit_test(test_aadsts_number_is_read_from_codes_or_description_only_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
