/* pages.h — the HTML frame of the setup assistant: one layout, escaped values only,
 * a stylesheet served from /setup/style.css (the CSP allows no inline style or
 * script), pages that work without JavaScript and on a narrow screen. */
#ifndef BROKER_ROUTES_PAGES_H
#define BROKER_ROUTES_PAGES_H
#include "core/buf.h"
#include "http/breq.h"

/* Open a page: doctype, head, the product header and <main>. title is escaped; base
 * is BROKER_PUBLIC_URL's path (cfg->public_path), which every link of ours starts with. */
void page_begin(buf_t *out, const char *base, const char *title);
/* Close <main> and the document. */
void page_end(buf_t *out);
/* Append escaped text. */
void page_text(buf_t *out, const char *s);
/* Answer an error page: a heading, the message (escaped) and what to do next
 * (open a new setup link from Salesforce; for 5xx, wait and retry). */
void pages_error(breq_t *b, int status, const char *title, const char *message);
/* The same for a problem inside a setup session: what to do next is a link back to
 * the setup page (which itself says when the session has ended). */
void pages_error_setup(breq_t *b, int status, const char *title, const char *message);
/* The stylesheet. */
extern const char PAGES_CSS[];
#endif
