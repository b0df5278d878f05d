/* cmd.c — building a Redis command in argv form (see cmd.h).
 * Owns: the command's memory; every argument is copied in and wiped when freed, since
 * arguments carry sealed records and audit events (never a secret in clear, but wiped
 * all the same). Never: talks to Redis, logs. Tested by tests/unit/test_store_conn.c. */
#include "store/cmd.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "store/audit.h"
#include "store/keys.h"

void store_cmd_free(store_cmd_t *c)
{
    for (int i = 0; i < c->argc; i++) {
        explicit_bzero((char *)c->argv[i], c->lens[i]);
        free((char *)c->argv[i]);
    }
    free(c->argv);
    free(c->lens);
    memset(c, 0, sizeof(*c));
}

void store_cmd_add(store_cmd_t *c, const char *s, size_t len)
{
    if (c->argc == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        const char **argv = realloc(c->argv, (size_t)cap * sizeof(*argv));
        if (argv == NULL)
            abort();
        c->argv = argv;
        size_t *lens = realloc(c->lens, (size_t)cap * sizeof(*lens));
        if (lens == NULL)
            abort();
        c->lens = lens;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, s, len);
    copy[len] = '\0';
    c->argv[c->argc] = copy;
    c->lens[c->argc++] = len;
}

void store_cmd_adds(store_cmd_t *c, const char *s)
{
    store_cmd_add(c, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

void store_cmd_addf(store_cmd_t *c, const char *fmt, ...)
{
    char tmp[KEY_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    store_cmd_add(c, tmp, n < 0 ? 0 : (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

void store_cmd_begin(store_cmd_t *c, const char *name)
{
    memset(c, 0, sizeof(*c));
    store_cmd_adds(c, name);
}

void store_cmd_eval(store_cmd_t *c, const char *script, size_t nkeys)
{
    store_cmd_begin(c, "EVAL");
    store_cmd_adds(c, script);
    store_cmd_addf(c, "%zu", nkeys);
}

void store_cmd_audit(store_cmd_t *c, const store_audit_t *audit)
{
    for (size_t i = 0; audit != NULL && i < AUDIT_TAIL_ARGS; i++)
        store_cmd_adds(c, audit->argv[i]);
}

void store_cmd_audit_tail(store_cmd_t *c, const store_audit_t *audit)
{
    if (audit != NULL)
        store_cmd_audit(c, audit);
    else
        for (int i = 0; i < AUDIT_TAIL_ARGS; i++)
            store_cmd_adds(c, "");
}
