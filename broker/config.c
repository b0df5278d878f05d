/* config.c — the broker's configuration, read once from the environment (README "Configuration").
 *
 * Owns: every BROKER_* and STRIPE_* variable: defaults, the NAME_FILE variants
 * (Kubernetes Secrets; one trailing "\n" or "\r\n" stripped), validation, and the
 * return_url allow-list check used by the setup routes. The first problem found
 * stops loading with one line "<VARIABLE>: <what is wrong>" in err.
 * Never: puts a value into an error line (values may be secrets, and a URL may carry
 * a Redis password); keeps a secret in freed memory (config_free wipes them).
 * Tested by: tests/unit/test_config.c (each variable, its errors, _FILE) and
 * tests/fuzz/fuzz_config.c (any value of any variable, and the return_url check). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "core/crypto.h"
#include "core/form.h"
#include "core/netaddr.h"

#define CONFIG_FILE_MAX_BYTES (64 * 1024)
#define CONFIG_NAME_MAX 64
#define ADMIN_TOKEN_MIN_CHARS 32
#define ADMIN_TOKEN_MAX_CHARS 1024
#define REDIS_PREFIX_MAX_CHARS 64
#define REDIS_DEFAULT_PORT 6379
#define REDIS_DB_MAX 65535
#define UNIX_PATH_MAX_BYTES 107
#define THREADS_MAX 256
#define REFRESH_MARGIN_MAX_S 86400
#define UPSTREAM_TIMEOUT_MIN_MS 100
#define UPSTREAM_TIMEOUT_MAX_MS 120000
#define RETURN_URL_MAX_CHARS 2048
#define RETURN_ALLOW_MAX_ENTRIES 64
#define TRUSTED_PROXIES_MAX_ENTRIES 64

#define DEFAULT_LISTEN "127.0.0.1:8080"
#define DEFAULT_REDIS_URL "redis://127.0.0.1:6379/0"
#define DEFAULT_REDIS_PREFIX "stb:"
#define DEFAULT_REFRESH_MARGIN_S "300"
#define DEFAULT_UPSTREAM_TIMEOUT_MS "5000"
#define DEFAULT_RETURN_URL_ALLOW                                                                   \
    "https://*.my.salesforce.com,https://*.lightning.force.com,https://*.my.site.com,"            \
    "https://*.force.com"
#define DEFAULT_CONNECT_URL "https://connect.stripe.com"
#define DEFAULT_API_URL "https://api.stripe.com"
#define DEFAULT_MARKETPLACE_URL "https://marketplace.stripe.com"
#define DEFAULT_PROXY_ALLOW                                                                        \
    "payment_intents,charges,refunds,customers,payment_methods,setup_intents,"                    \
    "balance_transactions,disputes"
#define DEFAULT_PROXY_TIMEOUT_MS "30000"
#define PROXY_TIMEOUT_MIN_MS 100
#define PROXY_TIMEOUT_MAX_MS 120000

typedef struct loader {
    config_getenv_fn get;
    void *ctx;
    char *err;
    size_t errlen;
} loader_t;

/* Write "<var>: <what>" into the error buffer; returns -1 for `return fail(…)`. */
static int fail(loader_t *l, const char *var, const char *what)
{
    if (l->err != NULL && l->errlen > 0)
        snprintf(l->err, l->errlen, "%s: %s", var, what);
    return -1;
}

static char *xstrdup(const char *s)
{
    char *d = strdup(s);

    if (d == NULL)
        abort();
    return d;
}

/* ===== Reading variables ================================================== */

/* Read the contents of path into a malloc'd string, one trailing newline stripped. */
static int read_file(loader_t *l, const char *fvar, const char *path, char **out)
{
    char *data = malloc(CONFIG_FILE_MAX_BYTES + 1);
    char what[128];
    size_t len = 0;
    ssize_t n;
    int fd = -1, rc = -1;

    if (data == NULL)
        abort();
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        snprintf(what, sizeof(what), "cannot open the file (%s)", strerror(errno));
        rc = fail(l, fvar, what);
        goto out;
    }
    while ((n = read(fd, data + len, CONFIG_FILE_MAX_BYTES + 1 - len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(what, sizeof(what), "cannot read the file (%s)", strerror(errno));
            rc = fail(l, fvar, what);
            goto out;
        }
        len += (size_t)n;
        if (len > CONFIG_FILE_MAX_BYTES) {
            rc = fail(l, fvar, "the file is larger than 64 KiB");
            goto out;
        }
    }
    if (len > 0 && data[len - 1] == '\n')
        len--;
    if (len > 0 && data[len - 1] == '\r')
        len--;
    data[len] = '\0';
    if (memchr(data, '\0', len) != NULL) {
        rc = fail(l, fvar, "the file contains a NUL byte");
        goto out;
    }
    if (len == 0) {
        rc = fail(l, fvar, "the file is empty");
        goto out;
    }
    *out = xstrdup(data);
    rc = 0;
out:
    if (fd >= 0)
        close(fd);
    secure_free(data, CONFIG_FILE_MAX_BYTES + 1);
    return rc;
}

/* The value of NAME or of the file named by NAME_FILE (malloc'd), or NULL when
 * neither is set (an empty value is unset). Both set, or an unreadable file, is an error. */
static int read_var(loader_t *l, const char *name, char **out)
{
    char fvar[CONFIG_NAME_MAX + 8], what[2 * CONFIG_NAME_MAX + 48];
    const char *v, *path;

    *out = NULL;
    snprintf(fvar, sizeof(fvar), "%s_FILE", name);
    v = l->get(name, l->ctx);
    path = l->get(fvar, l->ctx);
    /* an empty variable counts as unset (as in most deployment tools) */
    if (v != NULL && v[0] == '\0')
        v = NULL;
    if (path != NULL && path[0] == '\0')
        path = NULL;
    if (v != NULL && path != NULL) {
        snprintf(what, sizeof(what), "set either %s or %s, not both", name, fvar);
        return fail(l, name, what);
    }
    if (path != NULL) {
        if (read_file(l, fvar, path, out) != 0)
            return -1;
        if (**out == '\0') {
            free(*out);
            *out = NULL;
            return fail(l, fvar, "names an empty file");
        }
        return 0;
    }
    if (v == NULL)
        return 0;
    *out = xstrdup(v);
    return 0;
}

/* read_var, with a default when neither NAME nor NAME_FILE is set. */
static int read_var_default(loader_t *l, const char *name, const char *def, char **out)
{
    if (read_var(l, name, out) != 0)
        return -1;
    if (*out == NULL)
        *out = xstrdup(def);
    return 0;
}

/* ===== Small parsers ====================================================== */

/* Decimal digits only (no sign, no spaces), within [min, max]. */
static int parse_number(const char *s, long min, long max, long *out)
{
    long v = 0;
    size_t i;

    if (s[0] == '\0')
        return -1;
    for (i = 0; s[i] != '\0'; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
        if (v > max)
            return -1;
    }
    if (v < min)
        return -1;
    *out = v;
    return 0;
}

static int parse_number_n(const char *s, size_t len, long min, long max, long *out)
{
    char tmp[16];

    if (len == 0 || len >= sizeof(tmp))
        return -1;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return parse_number(tmp, min, max, out);
}

/* Printable ASCII without spaces: tokens, keys, ids. */
static int is_token(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

static int is_host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_';
}

/* A host name or IPv4 address: dot-separated non-empty labels of [A-Za-z0-9_-]. */
static int host_name_valid(const char *s, size_t len)
{
    size_t i, label = 0;

    if (len == 0 || len > 253)
        return 0;
    for (i = 0; i < len; i++) {
        if (s[i] == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (is_host_char((unsigned char)s[i]) && ++label <= 63) {
            continue;
        } else {
            return 0;
        }
    }
    return label > 0;
}

static int ipv6_valid(const char *s, size_t len)
{
    char tmp[64];
    struct in6_addr a;

    if (len == 0 || len >= sizeof(tmp))
        return 0;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    return inet_pton(AF_INET6, tmp, &a) == 1;
}

/* Split "host:port" or "[v6]:port" (port required when need_port) at s[0..len).
 * On success host/hostlen exclude brackets and *port is -1 when absent. */
static const char *split_hostport(const char *s, size_t len, int need_port, const char **host,
                                  size_t *hostlen, long *port)
{
    const char *colon;

    *port = -1;
    if (len > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (rb == NULL || !ipv6_valid(s + 1, (size_t)(rb - s - 1)))
            return "the IPv6 address in brackets is malformed";
        *host = s + 1;
        *hostlen = (size_t)(rb - s - 1);
        colon = rb + 1 < s + len ? rb + 1 : NULL;
        if (colon != NULL && *colon != ':')
            return "unexpected characters after the IPv6 address";
    } else {
        colon = memchr(s, ':', len);
        *host = s;
        *hostlen = colon != NULL ? (size_t)(colon - s) : len;
        if (!host_name_valid(*host, *hostlen))
            return "the host must be a host name or an IPv4 address (IPv6 in brackets)";
    }
    if (colon == NULL)
        return need_port ? "a port is required (host:port)" : NULL;
    if (parse_number_n(colon + 1, (size_t)(s + len - colon - 1), 1, 65535, port) != 0)
        return "the port must be a number from 1 to 65535";
    return NULL;
}

/* ===== URLs =============================================================== */

typedef struct url_parts {
    int https;         /* scheme is https (else http) */
    const char *host;  /* without brackets */
    size_t hostlen;
    int ipv6;
    long port;         /* -1 when absent */
    const char *rest;  /* path, query and fragment: "" or starting with / ? # */
} url_parts_t;

/* Split an absolute http(s) URL. Returns NULL or what is wrong with it. */
static const char *url_split(const char *url, url_parts_t *u)
{
    const char *p, *auth, *auth_end;
    size_t i;

    memset(u, 0, sizeof(*u));
    for (i = 0; url[i] != '\0'; i++)
        if ((unsigned char)url[i] <= 0x20 || (unsigned char)url[i] >= 0x7f || url[i] == '\\')
            return "must not contain spaces, control, non-ASCII characters or backslashes";
    if (strncasecmp(url, "https://", 8) == 0)
        u->https = 1, auth = url + 8;
    else if (strncasecmp(url, "http://", 7) == 0)
        auth = url + 7;
    else
        return "must be an absolute http:// or https:// URL";
    auth_end = auth + strcspn(auth, "/?#");
    for (p = auth; p < auth_end; p++)
        if (*p == '@')
            return "must not contain a user name or password";
    if (auth_end == auth)
        return "must have a host";
    if ((p = split_hostport(auth, (size_t)(auth_end - auth), 0, &u->host, &u->hostlen,
                            &u->port)) != NULL)
        return p;
    u->ipv6 = auth[0] == '[';
    u->rest = auth_end;
    return NULL;
}

static int host_is_loopback(const url_parts_t *u)
{
    char tmp[64];
    struct in_addr a4;
    struct in6_addr a6;

    if (u->hostlen >= sizeof(tmp))
        return 0;
    memcpy(tmp, u->host, u->hostlen);
    tmp[u->hostlen] = '\0';
    if (u->ipv6)
        return inet_pton(AF_INET6, tmp, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    if (strcasecmp(tmp, "localhost") == 0)
        return 1;
    return inet_pton(AF_INET, tmp, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/* A base URL (public or upstream): no query or fragment; trailing '/' removed. The
 * scheme is lower-cased. Loopback-only http when upstream is set. */
static int load_base_url(loader_t *l, const char *name, const char *def, int upstream,
                         char **out, int *https)
{
    url_parts_t u;
    const char *why;
    size_t len, slen;
    char *v;

    if (read_var(l, name, &v) != 0)
        return -1;
    if (v == NULL && def == NULL)
        return fail(l, name, "is required (an absolute URL such as https://broker.example.com)");
    if (v == NULL)
        v = xstrdup(def);
    if ((why = url_split(v, &u)) != NULL) {
        free(v);
        return fail(l, name, why);
    }
    if (strpbrk(u.rest, "?#") != NULL) {
        free(v);
        return fail(l, name, "must not have a query or a fragment");
    }
    if (upstream && !u.https && !host_is_loopback(&u)) {
        free(v);
        return fail(l, name, "must be https:// (http:// only for 127.0.0.0/8, [::1] or localhost)");
    }
    slen = u.https ? 5 : 4;
    for (len = 0; len < slen; len++)
        v[len] = (char)(v[len] | 0x20); /* lower-case the scheme */
    len = strlen(v);
    while (len > 0 && v[len - 1] == '/')
        v[--len] = '\0';
    *out = v;
    if (https != NULL)
        *https = u.https;
    return 0;
}

int config_route_segment(const char *s, size_t n)
{
    static const char *const segs[] = {"v1", "setup", "oauth", "webhooks", "healthz", "readyz", "metrics",
                                       "openapi.yaml"};
    for (size_t i = 0; i < sizeof(segs) / sizeof(segs[0]); i++)
        if (strlen(segs[i]) == n && memcmp(segs[i], s, n) == 0)
            return 1;
    return 0;
}

/* BROKER_PUBLIC_URL's path, the prefix an ingress forwards unchanged: "" or
 * "/seg[/seg…]" of [A-Za-z0-9._~-], no "." or ".." segment (it goes into links,
 * Location headers and the router as it is), whose first segment is not one of the
 * routes' (the router strips the path from any request that starts with it: with
 * "/v1", the API's own /v1/orgs/… would become /orgs/…). */
static int load_public_path(loader_t *l, config_t *c)
{
    const char *p = strstr(c->public_url, "://") + 3;
    p += strcspn(p, "/");
    for (const char *s = p; *s != '\0'; s++) {
        const char *e = s + 1 + strcspn(s + 1, "/");
        size_t n = (size_t)(e - s - 1);
        if (n == 0 || (n == 1 && s[1] == '.') || (n == 2 && s[1] == '.' && s[2] == '.') ||
            strspn(s + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-") < n)
            return fail(l, "BROKER_PUBLIC_URL",
                        "has a path with an empty, '.' or '..' segment or a character other than "
                        "[A-Za-z0-9._~-]");
        s = e - 1;
    }
    if (strlen(p) > 128)
        return fail(l, "BROKER_PUBLIC_URL", "has a path longer than 128 characters");
    if (*p != '\0' && config_route_segment(p + 1, strcspn(p + 1, "/")))
        return fail(l, "BROKER_PUBLIC_URL",
                    "has a path whose first segment is one of the broker's routes (v1, setup, oauth, webhooks, "
                    "healthz, readyz, metrics, openapi.yaml)");
    c->public_path = xstrdup(p);
    return 0;
}

/* ===== One loader per variable ============================================ */

/* A host written as an address (digits and dots, or an IPv6 literal) must be one, so that
 * `check` refuses what `serve` could not bind; a name is resolved when serving. */
static int listen_host_ok(const char *host)
{
    unsigned char a[sizeof(struct in6_addr)];
    if (strchr(host, ':') != NULL)
        return inet_pton(AF_INET6, host, a) == 1;
    if (host[strspn(host, "0123456789.")] == '\0')
        return inet_pton(AF_INET, host, a) == 1;
    return 1;
}

static int load_listen(loader_t *l, config_t *c)
{
    const char *host, *why;
    size_t hostlen;
    long port;
    char *v;
    int rc = -1;

    if (read_var_default(l, "BROKER_LISTEN", DEFAULT_LISTEN, &v) != 0)
        return -1;
    if ((why = split_hostport(v, strlen(v), 1, &host, &hostlen, &port)) != NULL) {
        rc = fail(l, "BROKER_LISTEN", why);
        goto out;
    }
    c->listen_host = strndup(host, hostlen);
    if (c->listen_host == NULL)
        abort();
    if (!listen_host_ok(c->listen_host)) {
        rc = fail(l, "BROKER_LISTEN", "the host is not a valid IP address");
        goto out;
    }
    c->listen_port = (int)port;
    rc = 0;
out:
    free(v);
    return rc;
}

/* redis://[:password@]host[:port][/db] */
static int parse_redis_tcp(loader_t *l, config_t *c, const char *v)
{
    const char *auth = v + strlen("redis://"), *auth_end, *at, *host, *why;
    size_t hostlen;
    long port, db = 0;

    if (strpbrk(auth, "?#") != NULL)
        return fail(l, "BROKER_REDIS_URL", "a query or fragment is not supported in redis:// URLs");
    auth_end = auth + strcspn(auth, "/");
    for (at = auth_end; at > auth && at[-1] != '@'; at--)
        ;
    at = at > auth ? at - 1 : NULL; /* the last '@': a password may contain one */
    if (at != NULL) {
        size_t plen = (size_t)(at - auth);
        if (plen == 0 || auth[0] != ':')
            return fail(l, "BROKER_REDIS_URL",
                        "a user name is not supported; use redis://:password@host:port/db");
        if (plen == 1)
            return fail(l, "BROKER_REDIS_URL", "the password is empty");
        c->redis_password = calloc(plen, 1); /* stays NUL-terminated on failure */
        if (c->redis_password == NULL)
            abort();
        if (form_unescape(auth + 1, plen - 1, c->redis_password, 0) < 0)
            return fail(l, "BROKER_REDIS_URL", "the password has a malformed %-escape");
        auth = at + 1;
    }
    if ((why = split_hostport(auth, (size_t)(auth_end - auth), 0, &host, &hostlen, &port)) != NULL)
        return fail(l, "BROKER_REDIS_URL", why);
    if (*auth_end == '/' && auth_end[1] != '\0' &&
        parse_number(auth_end + 1, 0, REDIS_DB_MAX, &db) != 0)
        return fail(l, "BROKER_REDIS_URL", "the database must be a number from 0 to 65535");
    c->redis_host = strndup(host, hostlen);
    if (c->redis_host == NULL)
        abort();
    c->redis_port = port < 0 ? REDIS_DEFAULT_PORT : (int)port;
    c->redis_db = (int)db;
    return 0;
}

/* unix:///path[?db=N] */
static int parse_redis_unix(loader_t *l, config_t *c, const char *v)
{
    const char *path = v + strlen("unix://"), *q = strchr(path, '?'), *p;
    size_t plen = q != NULL ? (size_t)(q - path) : strlen(path);
    long db = 0;

    if (path[0] != '/' || plen < 2)
        return fail(l, "BROKER_REDIS_URL", "unix:// must be followed by an absolute socket path");
    if (plen > UNIX_PATH_MAX_BYTES)
        return fail(l, "BROKER_REDIS_URL", "the socket path is longer than 107 bytes");
    for (p = path; p < path + plen; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return fail(l, "BROKER_REDIS_URL", "the socket path contains control characters");
    if (q != NULL &&
        (strncmp(q, "?db=", 4) != 0 || parse_number(q + 4, 0, REDIS_DB_MAX, &db) != 0))
        return fail(l, "BROKER_REDIS_URL", "the only query allowed is ?db=N (0 to 65535)");
    c->redis_unix = strndup(path, plen);
    if (c->redis_unix == NULL)
        abort();
    c->redis_db = (int)db;
    return 0;
}

static int load_redis(loader_t *l, config_t *c)
{
    char *v;
    int rc;

    if (read_var_default(l, "BROKER_REDIS_URL", DEFAULT_REDIS_URL, &v) != 0)
        return -1;
    if (strncasecmp(v, "redis://", 8) == 0)
        rc = parse_redis_tcp(l, c, v);
    else if (strncasecmp(v, "unix://", 7) == 0)
        rc = parse_redis_unix(l, c, v);
    else
        rc = fail(l, "BROKER_REDIS_URL", "must start with redis:// or unix://");
    secure_free_str(v); /* it may hold the password */
    return rc;
}

static int load_prefix(loader_t *l, config_t *c)
{
    if (read_var_default(l, "BROKER_REDIS_PREFIX", DEFAULT_REDIS_PREFIX, &c->redis_prefix) != 0)
        return -1;
    if (strlen(c->redis_prefix) > REDIS_PREFIX_MAX_CHARS || !is_token(c->redis_prefix))
        return fail(l, "BROKER_REDIS_PREFIX",
                    "must be 1 to 64 printable ASCII characters without spaces");
    return 0;
}

/* A number variable with a default, within [min, max]. */
static int load_number(loader_t *l, const char *name, const char *def, long min, long max,
                       int *out)
{
    char what[96], *v;
    long n;
    int rc = 0;

    if (read_var_default(l, name, def, &v) != 0)
        return -1;
    if (parse_number(v, min, max, &n) != 0) {
        snprintf(what, sizeof(what), "must be a whole number from %ld to %ld", min, max);
        rc = fail(l, name, what);
    } else {
        *out = (int)n;
    }
    free(v);
    return rc;
}

static int load_threads(loader_t *l, config_t *c)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    char def[16];

    cpus = cpus < 1 ? 1 : cpus > THREADS_MAX ? THREADS_MAX : cpus;
    snprintf(def, sizeof(def), "%ld", cpus);
    return load_number(l, "BROKER_THREADS", def, 1, THREADS_MAX, &c->threads);
}

static int load_keys(loader_t *l, config_t *c)
{
    const char *why = NULL;
    char *v;
    int rc;

    if (read_var(l, "BROKER_ENCRYPTION_KEYS", &v) != 0)
        return -1;
    if (v == NULL)
        return fail(l, "BROKER_ENCRYPTION_KEYS",
                    "is required (kid:base64key, e.g. k1:$(openssl rand -base64 32))");
    rc = keyring_parse(v, &c->keyring, &why);
    secure_free_str(v);
    return rc == 0 ? 0 : fail(l, "BROKER_ENCRYPTION_KEYS", why);
}

static int load_admin_token(loader_t *l, config_t *c)
{
    size_t len;

    if (read_var(l, "BROKER_ADMIN_TOKEN", &c->admin_token) != 0)
        return -1;
    if (c->admin_token == NULL)
        return fail(l, "BROKER_ADMIN_TOKEN", "is required (at least 32 characters)");
    len = strlen(c->admin_token);
    if (len < ADMIN_TOKEN_MIN_CHARS || len > ADMIN_TOKEN_MAX_CHARS)
        return fail(l, "BROKER_ADMIN_TOKEN", "must be 32 to 1024 characters long");
    if (!is_token(c->admin_token))
        return fail(l, "BROKER_ADMIN_TOKEN",
                    "must be printable ASCII without spaces or control characters");
    return 0;
}

/* A keyword variable: the index of its value in words, or the default. */
static int load_keyword(loader_t *l, const char *name, const char *const *words, size_t n,
                        const char *def, const char *what, int *out)
{
    char *v;
    size_t i;

    if (read_var_default(l, name, def, &v) != 0)
        return -1;
    for (i = 0; i < n; i++)
        if (strcmp(v, words[i]) == 0)
            break;
    free(v);
    if (i == n)
        return fail(l, name, what);
    *out = (int)i;
    return 0;
}

static int load_flavor(loader_t *l, config_t *c)
{
    static const char *const words[] = {"connect", "apps"};
    int v = 0;

    if (load_keyword(l, "BROKER_OAUTH_FLAVOR", words, 2, "connect", "must be connect or apps",
                     &v) != 0)
        return -1;
    c->flavor = v == 1 ? FLAVOR_APPS : FLAVOR_CONNECT;
    return 0;
}

static int load_log_level(loader_t *l, config_t *c)
{
    static const char *const words[] = {"debug", "info", "warn", "error"};

    return load_keyword(l, "BROKER_LOG_LEVEL", words, 4, "info",
                        "must be debug, info, warn or error", &c->log_level);
}

/* ===== return_url allow-list ============================================== */

typedef struct origin_pattern {
    int https;
    int wildcard;     /* host is "*.<suffix>" */
    const char *host; /* without "*."; lower case in stored patterns */
    size_t hostlen;
    long port;        /* explicit or the scheme's default */
} origin_pattern_t;

/* Parse "scheme://[*.]host[:port][/]" into p. Returns NULL or what is wrong. */
static const char *pattern_parse(const char *s, size_t len, origin_pattern_t *p)
{
    const char *host, *end = s + len, *colon, *hend;

    memset(p, 0, sizeof(*p));
    if (len >= 8 && strncasecmp(s, "https://", 8) == 0)
        p->https = 1, host = s + 8;
    else if (len >= 7 && strncasecmp(s, "http://", 7) == 0)
        host = s + 7;
    else
        return "must start with http:// or https://";
    if (end > host && end[-1] == '/')
        end--;
    if (end - host >= 2 && host[0] == '*' && host[1] == '.')
        p->wildcard = 1, host += 2;
    colon = memchr(host, ':', (size_t)(end - host));
    hend = colon != NULL ? colon : end;
    if (memchr(host, '*', (size_t)(hend - host)) != NULL)
        return "'*' may only stand for whole leftmost labels, as in *.example.com";
    if (!host_name_valid(host, (size_t)(hend - host)))
        return "must be scheme://host[:port] with no path, query or user name";
    p->host = host;
    p->hostlen = (size_t)(hend - host);
    p->port = p->https ? 443 : 80;
    if (colon != NULL && parse_number_n(colon + 1, (size_t)(end - colon - 1), 1, 65535,
                                        &p->port) != 0)
        return "the port must be a number from 1 to 65535";
    return NULL;
}

/* Store the pattern normalised: lower case, no trailing '/', default port omitted. */
static char *pattern_normalize(const origin_pattern_t *p)
{
    size_t i, cap = p->hostlen + 24; /* "https://" "*." ":65535" and the NUL */
    char *out = malloc(cap);

    if (out == NULL)
        abort();
    if (p->port == (p->https ? 443 : 80))
        snprintf(out, cap, "%s://%s%.*s", p->https ? "https" : "http", p->wildcard ? "*." : "",
                 (int)p->hostlen, p->host);
    else
        snprintf(out, cap, "%s://%s%.*s:%ld", p->https ? "https" : "http",
                 p->wildcard ? "*." : "", (int)p->hostlen, p->host, p->port);
    for (i = 0; out[i] != '\0'; i++)
        if (out[i] >= 'A' && out[i] <= 'Z')
            out[i] = (char)(out[i] + 32);
    return out;
}

/* ===== Comma lists ===== */

/* Take one entry of a comma list (s[0..len), spaces and tabs around it trimmed; len may
 * be 0), the index-th (from 0), into c: 0, or -1 with the reason written to why (cap
 * bytes), a text that names the entry and never its value. */
typedef int (*list_entry_fn)(config_t *c, const char *s, size_t len, size_t index, char *why, size_t cap);

/* The comma list v of variable var, each entry in order to take; the first it refuses
 * fails var with its reason. Returns 0 or -1. */
static int load_list(loader_t *l, config_t *c, const char *var, const char *v, list_entry_fn take)
{
    char why[160];
    for (size_t index = 0;; index++) {
        const char *comma = strchr(v, ',');
        size_t len = comma != NULL ? (size_t)(comma - v) : strlen(v);

        while (len > 0 && (*v == ' ' || *v == '\t'))
            v++, len--;
        while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        if (take(c, v, len, index, why, sizeof(why)) != 0)
            return fail(l, var, why);
        if (comma == NULL)
            return 0;
        v = comma + 1;
    }
}

/* BROKER_RETURN_URL_ALLOW: origins (`*` one label or more), normalised. */
static int take_return_allow(config_t *c, const char *s, size_t len, size_t index, char *why, size_t cap)
{
    origin_pattern_t pat;
    const char *bad;

    if (c->return_allow_n == RETURN_ALLOW_MAX_ENTRIES) {
        snprintf(why, cap, "too many entries (at most 64)");
        return -1;
    }
    bad = len == 0 ? "empty entry" : pattern_parse(s, len, &pat);
    if (bad != NULL) {
        snprintf(why, cap, "entry %zu: %s", index + 1, bad);
        return -1;
    }
    c->return_allow[c->return_allow_n++] = pattern_normalize(&pat);
    return 0;
}

static int load_return_allow(loader_t *l, config_t *c)
{
    char *v;
    int rc;

    if (read_var_default(l, "BROKER_RETURN_URL_ALLOW", DEFAULT_RETURN_URL_ALLOW, &v) != 0)
        return -1;
    c->return_allow = calloc(RETURN_ALLOW_MAX_ENTRIES, sizeof(char *));
    if (c->return_allow == NULL)
        abort();
    rc = load_list(l, c, "BROKER_RETURN_URL_ALLOW", v, take_return_allow);
    free(v);
    return rc;
}

/* BROKER_TRUSTED_PROXIES: addresses or CIDR ranges, IPv4 and IPv6. */
static int take_trusted_proxy(config_t *c, const char *s, size_t len, size_t index, char *why, size_t cap)
{
    if (c->trusted_proxies_n == TRUSTED_PROXIES_MAX_ENTRIES) {
        snprintf(why, cap, "too many entries (at most 64)");
        return -1;
    }
    if (len == 0 || cidr_parse(s, len, &c->trusted_proxies[c->trusted_proxies_n]) != 0) {
        snprintf(why, cap, "entry %zu is not an IPv4 or IPv6 address or CIDR range (10.0.0.0/8, fd00::/8)", index + 1);
        return -1;
    }
    c->trusted_proxies_n++;
    return 0;
}

/* BROKER_TRUSTED_PROXIES: comma list of addresses or CIDR ranges, IPv4 and IPv6; empty
 * (the default): no proxy is trusted and the client is always the TCP peer. */
static int load_trusted_proxies(loader_t *l, config_t *c)
{
    char *v;
    int rc;

    if (read_var_default(l, "BROKER_TRUSTED_PROXIES", "", &v) != 0)
        return -1;
    if (v[0] == '\0') {
        free(v);
        return 0;
    }
    c->trusted_proxies = calloc(TRUSTED_PROXIES_MAX_ENTRIES, sizeof(cidr_t));
    if (c->trusted_proxies == NULL)
        abort();
    rc = load_list(l, c, "BROKER_TRUSTED_PROXIES", v, take_trusted_proxy);
    free(v);
    return rc;
}

/* BROKER_PROXY_ALLOW: a Stripe API resource, [a-z_]+, not listed before. */
static int take_proxy_resource(config_t *c, const char *s, size_t len, size_t index, char *why, size_t cap)
{
    const char *bad = NULL;

    for (size_t i = 0; i < len && bad == NULL; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            bad = "not a Stripe resource name (lower-case letters and _)";
    if (len == 0)
        bad = "empty entry";
    else if (len > PROXY_RESOURCE_MAX_LEN)
        bad = "too long (at most 64 characters)";
    else if (bad == NULL && config_proxy_resource(c, s, len) >= 0)
        bad = "listed twice";
    if (bad == NULL && c->proxy_allow_n == PROXY_ALLOW_MAX_ENTRIES)
        bad = "too many entries (at most 32)";
    if (bad != NULL) {
        snprintf(why, cap, "entry %zu: %s", index + 1, bad);
        return -1;
    }
    if ((c->proxy_allow[c->proxy_allow_n] = strndup(s, len)) == NULL)
        abort();
    c->proxy_allow_n++;
    return 0;
}

/* BROKER_PROXY_ALLOW: a comma list of Stripe API resources, each [a-z_]+, no repeats. */
static int load_proxy_allow(loader_t *l, config_t *c)
{
    char *v;
    int rc;

    if (read_var_default(l, "BROKER_PROXY_ALLOW", DEFAULT_PROXY_ALLOW, &v) != 0)
        return -1;
    c->proxy_allow = calloc(PROXY_ALLOW_MAX_ENTRIES, sizeof(char *));
    if (c->proxy_allow == NULL)
        abort();
    rc = load_list(l, c, "BROKER_PROXY_ALLOW", v, take_proxy_resource);
    free(v);
    return rc;
}

int config_proxy_resource(const config_t *c, const char *resource, size_t len)
{
    for (size_t i = 0; i < c->proxy_allow_n; i++)
        if (strlen(c->proxy_allow[i]) == len && memcmp(c->proxy_allow[i], resource, len) == 0)
            return (int)i;
    return -1;
}

/* Does host (any case) match a stored, lower-case pattern host? A wildcard matches
 * one or more whole labels in front of the suffix. */
static int host_matches(const origin_pattern_t *p, const char *host, size_t hostlen)
{
    size_t off;

    if (!p->wildcard)
        return hostlen == p->hostlen && strncasecmp(host, p->host, hostlen) == 0;
    if (hostlen < p->hostlen + 2)
        return 0;
    off = hostlen - p->hostlen;
    return host[off - 1] == '.' && strncasecmp(host + off, p->host, p->hostlen) == 0;
}

int config_return_url_allowed(const config_t *c, const char *url)
{
    url_parts_t u;
    size_t i;
    long port;

    if (url == NULL || strlen(url) > RETURN_URL_MAX_CHARS || url_split(url, &u) != NULL || u.ipv6)
        return 0;
    port = u.port >= 0 ? u.port : u.https ? 443 : 80;
    for (i = 0; i < c->return_allow_n; i++) {
        origin_pattern_t p;
        const char *pat = c->return_allow[i];
        if (pattern_parse(pat, strlen(pat), &p) == NULL && p.https == u.https && p.port == port &&
            host_matches(&p, u.host, u.hostlen))
            return 1;
    }
    return 0;
}

/* ===== Stripe credentials ================================================= */

static int load_stripe_value(loader_t *l, const char *name, char **out)
{
    if (read_var(l, name, out) != 0)
        return -1;
    if (*out != NULL && !is_token(*out))
        return fail(l, name, "must be printable ASCII without spaces or control characters");
    return 0;
}

/* sk_test_… / rk_test_… (a restricted key) for test, sk_live_… / rk_live_… for live */
static int secret_key_of_mode(const char *key, int mode)
{
    const char *m = mode == MODE_TEST ? "test_" : "live_";
    return (strncmp(key, "sk_", 3) == 0 || strncmp(key, "rk_", 3) == 0) && strncmp(key + 3, m, 5) == 0;
}

static const char *const ids[] = {"STRIPE_CLIENT_ID_TEST", "STRIPE_CLIENT_ID_LIVE"};
static const char *const keys[] = {"STRIPE_SECRET_KEY_TEST", "STRIPE_SECRET_KEY_LIVE"};

static int load_stripe_mode(loader_t *l, config_t *c, int mode)
{
    static const char *const hooks[] = {"STRIPE_WEBHOOK_SECRET_TEST", "STRIPE_WEBHOOK_SECRET_LIVE"};
    stripe_mode_config_t *m = &c->stripe[mode];

    if (load_stripe_value(l, ids[mode], &m->client_id) != 0 ||
        load_stripe_value(l, keys[mode], &m->secret_key) != 0 ||
        load_stripe_value(l, hooks[mode], &m->webhook_secret) != 0)
        return -1;
    /* a key of the other mode, or something else in the slot, is a configuration mistake
     * that Stripe would only report at the first authorization: refuse it at start */
    if (m->client_id != NULL && strncmp(m->client_id, "ca_", 3) != 0)
        return fail(l, ids[mode], "must be a Stripe client id (ca_...)");
    if (m->secret_key != NULL && !secret_key_of_mode(m->secret_key, mode))
        return fail(l, keys[mode], mode == MODE_TEST ? "must be a test secret key (sk_test_... or rk_test_...)"
                                                     : "must be a live secret key (sk_live_... or rk_live_...)");
    if ((m->client_id == NULL) != (m->secret_key == NULL))
        m->missing = m->client_id == NULL ? ids[mode] : keys[mode];
    m->enabled = m->client_id != NULL && m->secret_key != NULL;
    return 0;
}

/* A mode is enabled when both its client id and its secret key are set (README "Configuration"); half a
 * pair leaves it disabled (the server logs a warning), and is an error only when no mode is
 * left: then it names the variable missing. */
static int load_stripe(loader_t *l, config_t *c)
{
    char what[96];

    if (load_stripe_mode(l, c, MODE_TEST) != 0 || load_stripe_mode(l, c, MODE_LIVE) != 0)
        return -1;
    if (c->stripe[MODE_TEST].enabled || c->stripe[MODE_LIVE].enabled)
        return 0;
    for (int mode = MODE_TEST; mode <= MODE_LIVE; mode++) {
        const stripe_mode_config_t *m = &c->stripe[mode];
        if (m->missing != NULL) {
            snprintf(what, sizeof(what), "is required when %s is set", m->client_id != NULL ? ids[mode] : keys[mode]);
            return fail(l, m->missing, what);
        }
    }
    return fail(l, "STRIPE_CLIENT_ID_TEST",
                "no Stripe mode is configured; set STRIPE_CLIENT_ID_TEST and "
                "STRIPE_SECRET_KEY_TEST, or the _LIVE pair");
}

/* ===== Events out (deploy/salesforce/EVENTS.md) ========================================= */

/* BROKER_EVENTS_URL and BROKER_EVENTS_SECRET: both or neither. The URL is an upstream
 * (https://, http:// only for loopback). */
static int load_events(loader_t *l, config_t *c)
{
    char *probe;
    if (read_var(l, "BROKER_EVENTS_URL", &probe) != 0)
        return -1;
    if (probe != NULL) {
        free(probe);
        if (load_base_url(l, "BROKER_EVENTS_URL", NULL, 1, &c->events_url, NULL) != 0)
            return -1;
    }
    if (read_var(l, "BROKER_EVENTS_SECRET", &c->events_secret) != 0)
        return -1;
    if (c->events_url != NULL && c->events_secret == NULL)
        return fail(l, "BROKER_EVENTS_SECRET", "is required when BROKER_EVENTS_URL is set");
    if (c->events_url == NULL && c->events_secret != NULL)
        return fail(l, "BROKER_EVENTS_URL", "is required when BROKER_EVENTS_SECRET is set");
    if (c->events_secret != NULL && strlen(c->events_secret) < 16)
        return fail(l, "BROKER_EVENTS_SECRET", "must be at least 16 characters");
    return 0;
}

/* ===== Entry points ======================================================= */

int config_load(config_t *c, config_getenv_fn get, void *ctx, char *err, size_t errlen)
{
    loader_t l = {get, ctx, err, errlen};

    memset(c, 0, sizeof(*c));
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (load_listen(&l, c) != 0 ||
        load_base_url(&l, "BROKER_PUBLIC_URL", NULL, 0, &c->public_url, &c->public_https) != 0 ||
        load_public_path(&l, c) != 0 ||
        load_redis(&l, c) != 0 || load_prefix(&l, c) != 0 || load_threads(&l, c) != 0 ||
        load_keys(&l, c) != 0 || load_admin_token(&l, c) != 0 || load_flavor(&l, c) != 0 ||
        load_number(&l, "BROKER_REFRESH_MARGIN_S", DEFAULT_REFRESH_MARGIN_S, 0,
                    REFRESH_MARGIN_MAX_S, &c->refresh_margin_s) != 0 ||
        load_number(&l, "BROKER_UPSTREAM_TIMEOUT_MS", DEFAULT_UPSTREAM_TIMEOUT_MS,
                    UPSTREAM_TIMEOUT_MIN_MS, UPSTREAM_TIMEOUT_MAX_MS,
                    &c->upstream_timeout_ms) != 0 ||
        load_number(&l, "BROKER_BACKGROUND_REFRESH_S", "60", 1, 3600, &c->background_refresh_s) != 0 ||
        load_number(&l, "BROKER_RATE_LIMIT_IP_PER_MIN", "1200", 0, 1000000, &c->rate_ip_per_min) != 0 ||
        load_number(&l, "BROKER_RATE_LIMIT_ORG_PER_S", "1000", 0, 1000000, &c->rate_org_per_s) != 0 ||
        load_number(&l, "BROKER_CACHE_BUSY_RPS", "200", 0, 10000000, &c->cache_busy_rps) != 0 ||
        load_trusted_proxies(&l, c) != 0 ||
        load_return_allow(&l, c) != 0 || load_log_level(&l, c) != 0 || load_stripe(&l, c) != 0 ||
        load_base_url(&l, "STRIPE_CONNECT_URL", DEFAULT_CONNECT_URL, 1, &c->connect_url,
                      NULL) != 0 ||
        load_base_url(&l, "STRIPE_API_URL", DEFAULT_API_URL, 1, &c->api_url, NULL) != 0 ||
        load_base_url(&l, "STRIPE_MARKETPLACE_URL", DEFAULT_MARKETPLACE_URL, 1,
                      &c->marketplace_url, NULL) != 0 ||
        load_proxy_allow(&l, c) != 0 ||
        load_number(&l, "BROKER_PROXY_TIMEOUT_MS", DEFAULT_PROXY_TIMEOUT_MS, PROXY_TIMEOUT_MIN_MS,
                    PROXY_TIMEOUT_MAX_MS, &c->proxy_timeout_ms) != 0 ||
        load_number(&l, "BROKER_AUDIT_RETENTION_DAYS", "400", 1, 36500, &c->audit_retention_days) != 0 ||
        load_number(&l, "BROKER_REFRESH_FAILING_S", "900", 1, 604800, &c->refresh_failing_s) != 0 ||
        load_number(&l, "BROKER_EVENTS_RETRY_MAX_S", "600", 1, 3600, &c->events_retry_max_s) != 0 ||
        load_events(&l, c) != 0) {
        config_free(c);
        return -1;
    }
    return 0;
}

void config_free(config_t *c)
{
    size_t i;
    int m;

    free(c->listen_host);
    free(c->public_url);
    free(c->public_path);
    free(c->redis_host);
    free(c->redis_unix);
    secure_free_str(c->redis_password);
    free(c->redis_prefix);
    keyring_free(&c->keyring);
    secure_free_str(c->admin_token);
    for (i = 0; i < c->return_allow_n; i++)
        free(c->return_allow[i]);
    free(c->return_allow);
    free(c->trusted_proxies);
    for (m = 0; m < MODE_COUNT; m++) {
        free(c->stripe[m].client_id);
        secure_free_str(c->stripe[m].secret_key);
        secure_free_str(c->stripe[m].webhook_secret);
    }
    free(c->connect_url);
    free(c->api_url);
    free(c->marketplace_url);
    for (i = 0; i < c->proxy_allow_n; i++)
        free(c->proxy_allow[i]);
    free(c->proxy_allow);
    free(c->events_url);
    secure_free_str(c->events_secret);
    memset(c, 0, sizeof(*c));
}
