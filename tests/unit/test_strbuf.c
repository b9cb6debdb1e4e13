/*
 * test_strbuf.c — growable strings and the PostgreSQL array literals the store
 * sends whole batches in: every text element is quoted, '"' and '\' are
 * escaped, NULL is the bare word, and nothing else is touched (commas, braces,
 * spaces, newlines and non-ASCII bytes pass as they are inside the quotes).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "strbuf.h"

static void assert_array(const char *const *elems, size_t n, const char *want)
{
    struct strbuf sb;
    strbuf_init(&sb);
    pgarray_begin(&sb);
    for (size_t i = 0; i < n; i++)
        pgarray_text(&sb, elems[i]);
    pgarray_end(&sb);
    assert_false(sb.oom);
    assert_string_equal(sb.data, want);
    strbuf_free(&sb);
}

static void test_text_elements_are_quoted_and_escaped(void **state)
{
    (void)state;
    const char *e1[] = {"plain"};
    assert_array(e1, 1, "{\"plain\"}");
    const char *e2[] = {"a\"b", "c\\d", "\"\\\"", ""};
    assert_array(e2, 4, "{\"a\\\"b\",\"c\\\\d\",\"\\\"\\\\\\\"\",\"\"}");
    const char *e3[] = {NULL, "NULL", "x,y", "{z}", " sp ", "l1\nl2", "\xc3\xa9"};
    assert_array(e3, 7, "{NULL,\"NULL\",\"x,y\",\"{z}\",\" sp \",\"l1\nl2\",\"\xc3\xa9\"}");
    assert_array(NULL, 0, "{}");
}

static void test_long_elements_with_escapes_at_the_edges(void **state)
{
    (void)state;
    /* Runs longer than any vector width, escapes first, last and in between. */
    size_t n = 5000;
    char *elem = malloc(n + 1), *want = malloc(2 * n + 8);
    for (size_t i = 0; i < n; i++)
        elem[i] = (char)('A' + (i % 26));
    elem[0] = '"';
    elem[n / 2] = '\\';
    elem[n - 1] = '"';
    elem[n] = '\0';
    size_t w = 0;
    want[w++] = '{';
    want[w++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (elem[i] == '"' || elem[i] == '\\')
            want[w++] = '\\';
        want[w++] = elem[i];
    }
    want[w++] = '"';
    want[w++] = '}';
    want[w] = '\0';
    const char *e[] = {elem};
    assert_array(e, 1, want);
    free(elem);
    free(want);
}

static void test_int64_elements_and_mixed_arrays(void **state)
{
    (void)state;
    struct strbuf sb;
    strbuf_init(&sb);
    pgarray_begin(&sb);
    pgarray_int64(&sb, 0);
    pgarray_int64(&sb, -9223372036854775807LL - 1);
    pgarray_int64(&sb, 9223372036854775807LL);
    pgarray_end(&sb);
    assert_string_equal(sb.data, "{0,-9223372036854775808,9223372036854775807}");
    strbuf_reset(&sb);
    assert_int_equal(sb.len, 0);
    strbuf_printf(&sb, "%s-%d", "x", 7);
    strbuf_append(&sb, "yz", 1);
    assert_string_equal(sb.data, "x-7y");
    strbuf_free(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_elements_are_quoted_and_escaped),
        cmocka_unit_test(test_long_elements_with_escapes_at_the_edges),
        cmocka_unit_test(test_int64_elements_and_mixed_arrays),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
