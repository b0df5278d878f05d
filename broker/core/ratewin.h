/* ratewin.h — events counted over fixed windows: how many in the current or the last
 * window. The busy test of the read cache (store/rcache.c) and of the log path
 * (http/breq.c); tested through them (tests/unit/test_rcache.c, tests/it/test_cache.py). */
#ifndef BROKER_CORE_RATEWIN_H
#define BROKER_CORE_RATEWIN_H
#include <stdint.h>

typedef struct ratewin {
    uint64_t start_ms; /* start of the current window */
    unsigned cur, prev;
} ratewin_t;

/* Counts n events at now_ms; returns the larger of the current window's count and the
 * previous one's (0 unless it is the window right before; a clock step back starts
 * afresh). */
static inline unsigned ratewin_add(ratewin_t *w, uint64_t now_ms, uint64_t window_ms, unsigned n)
{
    if (now_ms < w->start_ms || now_ms - w->start_ms >= window_ms) {
        w->prev = now_ms - w->start_ms < 2 * window_ms ? w->cur : 0;
        w->cur = 0;
        w->start_ms = now_ms;
    }
    w->cur += n;
    return w->cur > w->prev ? w->cur : w->prev;
}
#endif
