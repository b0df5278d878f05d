/* http1_resp.h — an HTTP/1.1 response read from a connection, as bytes arrive: the
 * status line and headers of the final answer (1xx answers are skipped), then the body
 * framed by Content-Length, chunked coding, or the connection's end (RFC 9112 §6).
 * Pure; never logs; keeps no copy of what it reads (the body goes to a callback as
 * slices of the caller's buffer, so that the caller alone holds and wipes it).
 *
 * Rules for callers:
 * - Feed what the connection gave, from the first byte not yet used; a head is used
 *   only whole (HTTP1_RESP_MORE with *used = 0 until it is), so keep unused bytes.
 * - At the connection's end call http1_resp_eof: only a body framed by the end is
 *   complete then.
 * - keepalive is known at DONE: the connection may carry the next request (the caller
 *   must also check that nothing follows the answer). */
#ifndef BROKER_CORE_HTTP1_RESP_H
#define BROKER_CORE_HTTP1_RESP_H
#include <stddef.h>

#define HTTP1_RESP_HEAD_MAX (32 * 1024) /* bytes of one head, status line included */

enum { HTTP1_RESP_MORE = 0, HTTP1_RESP_DONE = 1, HTTP1_RESP_ERROR = -1, HTTP1_RESP_STOPPED = -2 };

typedef struct http1_resp_cbs {
    /* each header of the final answer; name and value trimmed, not NUL-terminated */
    void (*header)(void *data, const char *name, size_t nlen, const char *value, size_t vlen);
    /* body bytes, decoded; non-zero stops the reading (http1_resp_feed: HTTP1_RESP_STOPPED) */
    int (*body)(void *data, const char *p, size_t len);
} http1_resp_cbs_t;

typedef struct http1_resp {
    int status;    /* the final answer's status, 0 until its head is read */
    int keepalive; /* at DONE: the connection may be used again */
    /* private */
    int state;
    int chunk_state;
    int chunk_digits;
    unsigned long long left; /* bytes of the body (Content-Length) or of the chunk */
} http1_resp_t;

void http1_resp_init(http1_resp_t *r);
/* Read in[0..len): HTTP1_RESP_MORE (all of it used, or a head not yet whole), DONE (the
 * answer ends at in + *used), ERROR (not a valid answer) or STOPPED. */
int http1_resp_feed(http1_resp_t *r, const char *in, size_t len, size_t *used, const http1_resp_cbs_t *cbs, void *data);
/* The connection ended: HTTP1_RESP_DONE when that completes the answer, else ERROR. */
int http1_resp_eof(http1_resp_t *r);
#endif
