/* curl_loop.c — libcurl multi on a worker's h2o evloop, for the OAuth POSTs to Stripe
 * (the proxy's calls have their own client: stripe/api.c).
 *
 * Design. curl_multi_socket_action drives every transfer; curl tells us what to watch
 * through two callbacks (the shape of curl's docs/examples/multi-uv.c):
 *   CURLMOPT_SOCKETFUNCTION -> one csock_t per curl socket: an h2o socket over a dup()
 *       of curl's fd (H2O_SOCKET_FLAG_DONT_READ, so curl does the reading). Reads are
 *       level-triggered (h2o_socket_read_start/stop). Write readiness is a one-shot
 *       h2o_socket_notify_write that cannot be armed twice nor cancelled, while curl
 *       only calls us when its interest *changes*: so we keep want_write/write_armed
 *       and re-arm *before* calling curl whenever curl still wants to write.
 *       curl_multi_socket_action may free the csock_t (CURL_POLL_REMOVE): it is never
 *       touched after that call.
 *   CURLMOPT_TIMERFUNCTION -> one timer entry. It only arms or disarms; curl is called
 *       from the entry's own callback. An h2o_timeout_t has a fixed duration, so there
 *       is a 0 ms list and power-of-two lists (1 ms .. 32 s): the entry goes to the
 *       largest list not beyond the deadline and hops until the (monotonic) deadline
 *       is reached. On h2o 2.2.5 a 0 ms entry re-linked from inside its own callback
 *       runs again in the same pass and spins, so a 0 asked for while that callback
 *       runs becomes 1 ms.
 *
 * Secrets: the form body, the Authorization header (Bearer, or Basic built here from
 * "user:") and the response body are our own copies, wiped with explicit_bzero before
 * they are freed. Never logs a URL, a header or a body. Redirects are not followed; only
 * https (and http when the caller allows it for the loopback simulator).
 *
 * Tested by tests/unit/test_curl_loop.c against an in-test HTTP server (status, body,
 * concurrency, hang/timeout, refused connection, size cap, destroy in flight). */
#include "stripe/curl_loop.h"
#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include "core/crypto.h"

/* Timer lists of 1, 8, 64, 512 and 4,096 ms: a wait is hops on the longest list that fits
 * (on_timer links the rest), at most seven on each shorter list. Few lists, because the
 * loop walks every list of the worker on every turn. */
#define CURL_TIMER_LISTS 5
#define CURL_TIMER_SHIFT 3
/* First allocation for a response body. */
#define CURL_BODY_INITIAL 4096

/* One socket curl asked us to watch. */
typedef struct csock {
    h2o_linklist_t link; /* in curl_loop_t.socks */
    curl_loop_t *c;
    curl_socket_t fd;    /* curl's fd (what curl_multi_socket_action wants) */
    h2o_socket_t *sock;  /* h2o wrapper of dup(fd) */
    int reading;
    int want_write;
    int write_armed;
} csock_t;

/* One POST in flight. */
typedef struct transfer {
    h2o_linklist_t link; /* in curl_loop_t.transfers */
    curl_loop_t *c;
    CURL *easy;
    curl_loop_cb cb;
    void *data;
    char *form;          /* request body (secret) */
    size_t form_len;
    struct curl_slist *headers; /* may hold the Authorization header (secret) */
    char *body;          /* response body (secret), NUL-terminated */
    size_t len, cap;
} transfer_t;

struct curl_loop {
    h2o_evloop_t *loop;
    CURLM *multi;
    h2o_linklist_t transfers;
    size_t inflight;
    h2o_linklist_t socks;
    h2o_timeout_t zero_list;
    h2o_timeout_t lists[CURL_TIMER_LISTS];
    h2o_timeout_entry_t timer;
    uint64_t timer_deadline; /* monotonic ms */
    int in_timer;            /* inside the timer entry's callback */
    int watch_failed;        /* on_curl_socket failed: curl marked the multi handle dead */
    int closing;
    int dispatching;         /* depth of calls into curl / user callbacks */
};

/* ===== Helpers ===== */

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void wipe_slist(struct curl_slist *l)
{
    for (struct curl_slist *s = l; s != NULL; s = s->next)
        explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(l);
}

/* ===== Completion ===== */

/* Remove the transfer from curl, run its callback once, free everything. */
static void transfer_finish(transfer_t *t, long status, CURLcode result)
{
    curl_loop_t *c = t->c;
    h2o_linklist_unlink(&t->link);
    c->inflight--;
    curl_multi_remove_handle(c->multi, t->easy);
    if (status != 0 && t->body != NULL) {
        t->body[t->len] = '\0';
        t->cb(status, t->body, t->len, t->data);
    } else {
        t->cb(status, "", 0, t->data);
    }
    curl_easy_cleanup(t->easy);
    wipe_slist(t->headers);
    secure_free(t->form, t->form_len);
    secure_free(t->body, t->cap);
    free(t);
}

static void check_multi_info(curl_loop_t *c)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (msg->msg != CURLMSG_DONE)
            continue;
        CURL *easy = msg->easy_handle;
        CURLcode result = msg->data.result; /* msg dies in curl_multi_remove_handle */
        void *priv = NULL;
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        if (result != CURLE_OK || curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK)
            status = 0;
        transfer_finish(priv, status, result);
    }
}

/* Let curl act on a socket (or on its timeout), then deliver finished transfers. */
static void drive(curl_loop_t *c, curl_socket_t fd, int ev_bitmask)
{
    int running = 0;
    c->dispatching++;
    curl_multi_socket_action(c->multi, fd, ev_bitmask, &running);
    check_multi_info(c);
    if (c->watch_failed) {
        /* curl now fails every transfer but stops calling the timer callback, so some
         * would never finish: fail them all here (the handle recovers once empty). */
        c->watch_failed = 0;
        while (!h2o_linklist_is_empty(&c->transfers))
            transfer_finish(H2O_STRUCT_FROM_MEMBER(transfer_t, link, c->transfers.next), 0, CURLE_SEND_ERROR);
    }
    c->dispatching--;
}

/* ===== Sockets ===== */

static void on_sock_writable(h2o_socket_t *sock, const char *err);

static void arm_write(csock_t *w)
{
    if (!w->write_armed) {
        w->write_armed = 1;
        h2o_socket_notify_write(w->sock, on_sock_writable);
    }
}

static void on_sock_readable(h2o_socket_t *sock, const char *err)
{
    csock_t *w = sock->data;
    curl_loop_t *c = w->c;
    curl_socket_t fd = w->fd;
    if (w->want_write)
        arm_write(w); /* keep write interest alive across this call */
    drive(c, fd, CURL_CSELECT_IN | (err != NULL ? CURL_CSELECT_ERR : 0)); /* w may be gone */
}

static void on_sock_writable(h2o_socket_t *sock, const char *err)
{
    csock_t *w = sock->data;
    curl_loop_t *c = w->c;
    curl_socket_t fd = w->fd;
    w->write_armed = 0;
    if (!w->want_write && err == NULL)
        return; /* curl lost interest after we armed: nothing to do */
    if (w->want_write)
        arm_write(w); /* curl will not tell us again that it still wants to write */
    drive(c, fd, CURL_CSELECT_OUT | (err != NULL ? CURL_CSELECT_ERR : 0)); /* w may be gone */
}

static void csock_close(csock_t *w)
{
    h2o_linklist_unlink(&w->link);
    if (w->sock != NULL)
        h2o_socket_close(w->sock); /* closes the dup; an armed notification dies with it */
    free(w);
}

/* A csock over a dup of curl's fd s; NULL when it cannot be made. */
static csock_t *csock_new(curl_loop_t *c, curl_socket_t s)
{
    csock_t *w;
    int fd = fcntl(s, F_DUPFD_CLOEXEC, 0);
    if (fd == -1 || (w = calloc(1, sizeof(*w))) == NULL) {
        if (fd != -1)
            close(fd);
        return NULL;
    }
    w->c = c;
    w->fd = s;
    w->sock = h2o_evloop_socket_create(c->loop, fd, H2O_SOCKET_FLAG_DONT_READ);
    w->sock->data = w;
    h2o_linklist_insert(&c->socks, &w->link);
    return w;
}

static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    curl_loop_t *c = userp;
    csock_t *w = socketp;
    (void)easy;

    if (what == CURL_POLL_REMOVE) {
        if (w != NULL) {
            curl_multi_assign(c->multi, s, NULL);
            csock_close(w);
        }
        return 0;
    }
    if (w == NULL) {
        if ((w = csock_new(c, s)) == NULL) {
            c->watch_failed = 1;
            return -1;
        }
        curl_multi_assign(c->multi, s, w);
    }
    int want_read = (what & CURL_POLL_IN) != 0;
    if (want_read && !w->reading)
        h2o_socket_read_start(w->sock, on_sock_readable);
    else if (!want_read && w->reading)
        h2o_socket_read_stop(w->sock);
    w->reading = want_read;
    w->want_write = (what & CURL_POLL_OUT) != 0;
    if (w->want_write)
        arm_write(w);
    return 0;
}

/* ===== Timer ===== */

static void link_timer(curl_loop_t *c, uint64_t remaining_ms)
{
    int i = CURL_TIMER_LISTS - 1;
    while (i > 0 && ((uint64_t)1 << (i * CURL_TIMER_SHIFT)) > remaining_ms)
        i--;
    h2o_timeout_link(c->loop, &c->lists[i], &c->timer);
}

static void on_timer(h2o_timeout_entry_t *entry)
{
    curl_loop_t *c = H2O_STRUCT_FROM_MEMBER(curl_loop_t, timer, entry);
    uint64_t now = mono_ms();
    if (now < c->timer_deadline) {
        link_timer(c, c->timer_deadline - now); /* a hop of a longer wait */
        return;
    }
    c->in_timer = 1;
    drive(c, CURL_SOCKET_TIMEOUT, 0);
    c->in_timer = 0;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    curl_loop_t *c = userp;
    (void)multi;
    h2o_timeout_unlink(&c->timer);
    if (timeout_ms < 0)
        return 0;
    c->timer_deadline = mono_ms() + (uint64_t)timeout_ms;
    if (timeout_ms == 0 && !c->in_timer)
        h2o_timeout_link(c->loop, &c->zero_list, &c->timer);
    else
        link_timer(c, timeout_ms > 0 ? (uint64_t)timeout_ms : 1);
    return 0;
}

/* ===== Response body ===== */

/* Grow without realloc so no unwiped copy of the body is left behind. */
static int body_reserve(transfer_t *t, size_t need)
{
    if (need <= t->cap)
        return 0;
    size_t ncap = t->cap != 0 ? t->cap : CURL_BODY_INITIAL;
    while (ncap < need)
        ncap *= 2;
    if (ncap > CURL_LOOP_MAX_RESPONSE + 1)
        ncap = CURL_LOOP_MAX_RESPONSE + 1;
    char *nb = malloc(ncap);
    if (nb == NULL)
        return -1;
    if (t->len != 0)
        memcpy(nb, t->body, t->len);
    secure_free(t->body, t->cap);
    t->body = nb;
    t->cap = ncap;
    return 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    transfer_t *t = userdata;
    size_t n = size * nmemb;
    /* room for the NUL; a short count makes curl fail the transfer (CURLE_WRITE_ERROR) */
    if (n > CURL_LOOP_MAX_RESPONSE - t->len || body_reserve(t, t->len + n + 1) != 0)
        return 0;
    memcpy(t->body + t->len, ptr, n);
    t->len += n;
    return n;
}

/* ===== Request ===== */

/* Append "prefix" + value as one header. Our temporary copy is wiped. Returns 0 or -1. */
static int add_header(struct curl_slist **l, const char *prefix, const char *value, size_t vlen)
{
    size_t plen = strlen(prefix);
    char *h = malloc(plen + vlen + 1);
    struct curl_slist *nl;
    if (h == NULL)
        return -1;
    memcpy(h, prefix, plen);
    memcpy(h + plen, value, vlen);
    h[plen + vlen] = '\0';
    nl = curl_slist_append(*l, h);
    secure_free(h, plen + vlen + 1);
    if (nl == NULL)
        return -1;
    *l = nl;
    return 0;
}

/* "Authorization: Basic base64(user:)", built here so that every copy is ours to wipe. */
static int add_basic(struct curl_slist **l, const char *user)
{
    size_t ulen = strlen(user), rawlen = ulen + 1, enclen = 4 * ((rawlen + 2) / 3);
    unsigned char *raw = malloc(rawlen);
    unsigned char *enc = malloc(enclen + 1);
    int rc = -1;
    if (raw != NULL && enc != NULL && rawlen <= INT32_MAX) {
        memcpy(raw, user, ulen);
        raw[ulen] = ':';
        int n = EVP_EncodeBlock(enc, raw, (int)rawlen);
        if (n >= 0)
            rc = add_header(l, "Authorization: Basic ", (const char *)enc, (size_t)n);
    }
    secure_free(raw, rawlen);
    secure_free(enc, enclen + 1);
    return rc;
}

curl_loop_t *curl_loop_create(h2o_evloop_t *loop)
{
    curl_loop_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    if ((c->multi = curl_multi_init()) == NULL) {
        free(c);
        return NULL;
    }
    c->loop = loop;
    h2o_linklist_init_anchor(&c->transfers);
    h2o_linklist_init_anchor(&c->socks);
    h2o_timeout_init(loop, &c->zero_list, 0);
    for (int i = 0; i < CURL_TIMER_LISTS; i++)
        h2o_timeout_init(loop, &c->lists[i], (uint64_t)1 << (i * CURL_TIMER_SHIFT));
    c->timer.cb = on_timer;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    return c;
}

int curl_loop_post(curl_loop_t *c, const curl_loop_req_t *req, curl_loop_cb cb, void *data)
{
    transfer_t *t = NULL;
    const char *form;
#ifdef BROKER_VERSION
    static const char user_agent[] = "stripe-token-broker/" BROKER_VERSION;
#else
    static const char user_agent[] = "stripe-token-broker";
#endif

    if (c->closing || req == NULL || req->url == NULL || cb == NULL || req->timeout_ms <= 0)
        return -1;
    if ((t = calloc(1, sizeof(*t))) == NULL)
        return -1;
    t->c = c;
    t->cb = cb;
    t->data = data;
    form = req->form != NULL ? req->form : "";
    t->form_len = strlen(form) + 1;
    if ((t->form = malloc(t->form_len)) == NULL)
        goto fail;
    memcpy(t->form, form, t->form_len);

    if (add_header(&t->headers, "Content-Type: ", "application/x-www-form-urlencoded", 33) != 0 ||
        add_header(&t->headers, "Expect:", "", 0) != 0 ||
        (req->bearer != NULL && add_header(&t->headers, "Authorization: Bearer ", req->bearer, strlen(req->bearer)) != 0) ||
        (req->bearer == NULL && req->basic_user != NULL && add_basic(&t->headers, req->basic_user) != 0))
        goto fail;

    if ((t->easy = curl_easy_init()) == NULL)
        goto fail;
    CURL *e = t->easy;
    if (curl_easy_setopt(e, CURLOPT_URL, req->url) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, req->allow_http ? "http,https" : "https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms) != CURLE_OK ||
        /* a transfer that times out while resolving must not join the resolver thread
         * on the loop (curl 7.87+) */
        curl_easy_setopt(e, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2) != CURLE_OK ||
        /* Every call is a non-idempotent POST (a code exchange, a refresh, a deauthorize):
         * libcurl silently re-sends a request whose reused keep-alive connection turns out
         * dead, which would present a code or a rotating refresh token to Stripe twice.
         * A fresh connection per call, never reused, makes each call go out exactly once. */
        curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->form) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(t->form_len - 1)) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_WRITEDATA, t) != CURLE_OK ||
        curl_easy_setopt(e, CURLOPT_PRIVATE, t) != CURLE_OK)
        goto fail;
    if (curl_multi_add_handle(c->multi, e) != CURLM_OK)
        goto fail;
    h2o_linklist_insert(&c->transfers, &t->link);
    c->inflight++;
    return 0;

fail:
    if (t->easy != NULL)
        curl_easy_cleanup(t->easy);
    wipe_slist(t->headers);
    secure_free(t->form, t->form_len);
    free(t);
    return -1;
}

size_t curl_loop_inflight(curl_loop_t *c)
{
    return c->inflight;
}

void curl_loop_destroy(curl_loop_t *c)
{
    if (c == NULL)
        return;
    /* Not from inside a curl_loop callback: curl and the caller's caller are using c. */
    assert(c->dispatching == 0);
    c->closing = 1;
    c->dispatching++;
    while (!h2o_linklist_is_empty(&c->transfers))
        transfer_finish(H2O_STRUCT_FROM_MEMBER(transfer_t, link, c->transfers.next), 0, CURLE_ABORTED_BY_CALLBACK);
    c->dispatching--;
    curl_multi_cleanup(c->multi);
    while (!h2o_linklist_is_empty(&c->socks))
        csock_close(H2O_STRUCT_FROM_MEMBER(csock_t, link, c->socks.next));
    h2o_timeout_unlink(&c->timer);
    h2o_timeout_dispose(c->loop, &c->zero_list);
    for (int i = 0; i < CURL_TIMER_LISTS; i++)
        h2o_timeout_dispose(c->loop, &c->lists[i]);
    free(c);
}
