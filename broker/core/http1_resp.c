/* http1_resp.c — reading an HTTP/1.1 response as bytes arrive (see http1_resp.h).
 *
 * Owns: the response head's syntax (status line, header lines, the end of the head), the
 * choice of the body's framing (RFC 9112 §6.3: no body for 204 and 304; chunked when
 * Transfer-Encoding is chunked; else Content-Length; else the connection's end), the
 * chunked decoder, and whether the connection may be used again.
 * Strict where a lenient reading could frame a body wrongly (a Transfer-Encoding other
 * than chunked, conflicting Content-Lengths, a folded header line, a NUL or a bare CR:
 * errors); a bare LF is taken for CRLF. Never logs.
 * Tested by tests/unit/test_http1_resp.c and tests/fuzz/fuzz_http1_resp.c. */
#include "core/http1_resp.h"
#include "core/crypto.h"
#include <string.h>
#include <strings.h>

enum { S_HEAD, S_LEN, S_CHUNK, S_CLOSE, S_DONE, S_ERROR };
enum { C_SIZE, C_EXT, C_DATA, C_DATA_CR, C_DATA_LF, C_TRAILER, C_TRAILER_LINE, C_LAST_LF };

#define CHUNK_DIGITS_MAX 15

void http1_resp_init(http1_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    r->state = S_HEAD;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static int eq_token(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

/* Whether the comma-separated list v has the token lit (case-insensitive). */
static int has_token(const char *v, size_t n, const char *lit)
{
    size_t i = 0;
    while (i < n) {
        size_t s, e;
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        s = i;
        while (i < n && v[i] != ',')
            i++;
        e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (eq_token(v + s, e - s, lit))
            return 1;
    }
    return 0;
}

/* Length of the head at in (through its empty line), 0 when not whole, -1 when it cannot
 * be one (over HTTP1_RESP_HEAD_MAX, a NUL). */
static long head_end(const char *in, size_t len)
{
    size_t line = 0;
    for (size_t i = 0; i < len && i < HTTP1_RESP_HEAD_MAX; i++) {
        if (in[i] == '\0')
            return -1;
        if (in[i] != '\n')
            continue;
        if (i == line || (i == line + 1 && in[line] == '\r'))
            return line == 0 ? -1 : (long)(i + 1); /* an empty first line is no status line */
        line = i + 1;
    }
    return len >= HTTP1_RESP_HEAD_MAX ? -1 : 0;
}

/* The next line of the head at *p (before end), without its CRLF; -1 on a bare CR. */
static int next_line(const char **p, const char *end, const char **s, size_t *n)
{
    const char *nl = memchr(*p, '\n', (size_t)(end - *p));
    const char *e = nl;
    if (e > *p && e[-1] == '\r')
        e--;
    *s = *p;
    *n = (size_t)(e - *p);
    *p = nl + 1;
    return memchr(*s, '\r', *n) != NULL ? -1 : 0;
}

/* Parse a whole head of hlen bytes. Returns 1 for a final answer (framing set), 0 for
 * a 1xx to skip, -1 on error. */
static int parse_head(http1_resp_t *r, const char *in, size_t hlen, const http1_resp_cbs_t *cbs, void *data)
{
    const char *p = in, *end = in + hlen, *s;
    size_t n;
    int status, minor, chunked = 0, te = 0, close = 0;
    unsigned long long clen = 0;
    int have_len = 0;

    if (next_line(&p, end, &s, &n) != 0 || n < 12 || memcmp(s, "HTTP/1.", 7) != 0 || (s[7] != '0' && s[7] != '1') ||
        s[8] != ' ' || s[9] < '1' || s[9] > '5' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9' ||
        (n > 12 && s[12] != ' '))
        return -1;
    minor = s[7] - '0';
    status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    if (status == 101)
        return -1; /* never asked for */
    int informational = status < 200;
    while (p < end) {
        const char *colon, *v;
        size_t vlen, nlen;
        if (next_line(&p, end, &s, &n) != 0)
            return -1;
        if (n == 0)
            break; /* the empty line */
        if (s[0] == ' ' || s[0] == '\t' || (colon = memchr(s, ':', n)) == NULL || colon == s)
            return -1; /* folded, or not a header line */
        nlen = (size_t)(colon - s);
        for (size_t i = 0; i < nlen; i++)
            if (!is_tchar((unsigned char)s[i]))
                return -1;
        v = colon + 1;
        vlen = n - nlen - 1;
        while (vlen > 0 && (*v == ' ' || *v == '\t'))
            v++, vlen--;
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        if (informational)
            continue;
        if (eq_token(s, nlen, "transfer-encoding")) {
            if (te || !eq_token(v, vlen, "chunked"))
                return -1; /* only a single chunked coding is read */
            te = chunked = 1;
        } else if (eq_token(s, nlen, "content-length")) {
            unsigned long long x = 0;
            if (vlen == 0 || vlen > 15)
                return -1;
            for (size_t i = 0; i < vlen; i++) {
                if (v[i] < '0' || v[i] > '9')
                    return -1;
                x = x * 10 + (unsigned)(v[i] - '0');
            }
            if (have_len && x != clen)
                return -1;
            clen = x;
            have_len = 1;
        } else if (eq_token(s, nlen, "connection")) {
            close |= has_token(v, vlen, "close");
        }
        if (cbs->header != NULL)
            cbs->header(data, s, nlen, v, vlen);
    }
    if (informational)
        return 0;
    r->status = status;
    r->keepalive = minor == 1 && !close;
    if (status == 204 || status == 304) {
        r->state = S_DONE;
    } else if (chunked) {
        r->state = S_CHUNK;
        r->chunk_state = C_SIZE;
        r->keepalive &= !have_len; /* both: the length is ignored, the connection not trusted after */
    } else if (have_len) {
        r->state = clen == 0 ? S_DONE : S_LEN;
        r->left = clen;
    } else {
        r->state = S_CLOSE;
        r->keepalive = 0;
    }
    return 1;
}

/* The chunked body: returns DONE, MORE, ERROR or STOPPED; *i advanced. */
static int chunked(http1_resp_t *r, const char *in, size_t len, size_t *i, const http1_resp_cbs_t *cbs, void *data)
{
    while (*i < len) {
        char c = in[*i];
        int h;
        switch (r->chunk_state) {
        case C_SIZE:
            if ((h = hex_value((unsigned char)c)) >= 0) {
                if (++r->chunk_digits > CHUNK_DIGITS_MAX)
                    return HTTP1_RESP_ERROR;
                r->left = r->left * 16 + (unsigned)h;
                (*i)++;
                continue;
            }
            if (r->chunk_digits == 0 || (c != ';' && c != '\r' && c != '\n' && c != ' ' && c != '\t'))
                return HTTP1_RESP_ERROR;
            r->chunk_state = C_EXT;
            continue;
        case C_EXT: /* extensions are skipped up to the end of the line */
            (*i)++;
            if (c == '\0')
                return HTTP1_RESP_ERROR;
            if (c == '\n') {
                r->chunk_digits = 0;
                r->chunk_state = r->left == 0 ? C_TRAILER : C_DATA;
            }
            continue;
        case C_DATA: {
            size_t n = len - *i < r->left ? len - *i : (size_t)r->left;
            if (cbs->body != NULL && cbs->body(data, in + *i, n) != 0)
                return HTTP1_RESP_STOPPED;
            *i += n;
            if ((r->left -= n) == 0)
                r->chunk_state = C_DATA_CR;
            continue;
        }
        case C_DATA_CR:
            (*i)++;
            if (c == '\r')
                r->chunk_state = C_DATA_LF;
            else if (c == '\n')
                r->chunk_state = C_SIZE;
            else
                return HTTP1_RESP_ERROR;
            continue;
        case C_DATA_LF:
            (*i)++;
            if (c != '\n')
                return HTTP1_RESP_ERROR;
            r->chunk_state = C_SIZE;
            continue;
        case C_TRAILER: /* the start of a trailer line: the empty one ends the body */
            (*i)++;
            if (c == '\n')
                return HTTP1_RESP_DONE;
            r->chunk_state = c == '\r' ? C_LAST_LF : C_TRAILER_LINE;
            continue;
        case C_TRAILER_LINE:
            (*i)++;
            if (c == '\0')
                return HTTP1_RESP_ERROR;
            if (c == '\n')
                r->chunk_state = C_TRAILER;
            continue;
        case C_LAST_LF:
            (*i)++;
            return c == '\n' ? HTTP1_RESP_DONE : HTTP1_RESP_ERROR;
        }
    }
    return HTTP1_RESP_MORE;
}

int http1_resp_feed(http1_resp_t *r, const char *in, size_t len, size_t *used, const http1_resp_cbs_t *cbs, void *data)
{
    size_t i = 0;
    int rc = r->state == S_ERROR ? HTTP1_RESP_ERROR : HTTP1_RESP_MORE;
    while (rc == HTTP1_RESP_MORE && r->state == S_HEAD) { /* 1xx heads, then the final one */
        long h = head_end(in + i, len - i);
        if (h == 0)
            break;
        if (h < 0 || parse_head(r, in + i, (size_t)h, cbs, data) < 0) {
            rc = HTTP1_RESP_ERROR;
            break;
        }
        i += (size_t)h;
    }
    if (rc == HTTP1_RESP_MORE) {
        switch (r->state) {
        case S_LEN: {
            size_t n = len - i < r->left ? len - i : (size_t)r->left;
            if (n > 0 && cbs->body != NULL && cbs->body(data, in + i, n) != 0) {
                rc = HTTP1_RESP_STOPPED;
                break;
            }
            i += n;
            if ((r->left -= n) == 0)
                r->state = S_DONE;
            break;
        }
        case S_CHUNK:
            if ((rc = chunked(r, in, len, &i, cbs, data)) == HTTP1_RESP_DONE)
                r->state = S_DONE;
            break;
        case S_CLOSE:
            if (len > i && cbs->body != NULL && cbs->body(data, in + i, len - i) != 0) {
                rc = HTTP1_RESP_STOPPED;
                break;
            }
            i = len;
            break;
        }
    }
    if (rc == HTTP1_RESP_MORE && r->state == S_DONE)
        rc = HTTP1_RESP_DONE;
    if (rc == HTTP1_RESP_ERROR || rc == HTTP1_RESP_STOPPED)
        r->state = S_ERROR;
    *used = i;
    return rc;
}

int http1_resp_eof(http1_resp_t *r)
{
    if (r->state == S_CLOSE || r->state == S_DONE) {
        r->state = S_DONE;
        r->keepalive = 0;
        return HTTP1_RESP_DONE;
    }
    r->state = S_ERROR;
    return HTTP1_RESP_ERROR;
}
