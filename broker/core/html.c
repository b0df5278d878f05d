/* html.c — the only way text reaches a page: html_escape.
 *
 * Owns: escaping of & < > " ' for HTML text and quoted attribute values. Control
 * characters other than tab and newline (and DEL) are dropped: they have no business
 * on a page and some browsers treat them oddly. Bytes >= 0x80 pass through (pages are
 * UTF-8).
 * Never: leaves a character that can end an attribute or open a tag unescaped.
 * Tested by: tests/unit/test_html.c. */
#include "html.h"

void html_escape(buf_t *b, const char *s, size_t len)
{
    size_t i, run = 0; /* start of the pending run of bytes that need no escaping */

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *rep = NULL;

        switch (c) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&#39;"; break;
        case '\t': case '\n': continue;
        default:
            if (c >= 0x20 && c != 0x7f)
                continue;
            rep = ""; /* dropped control character */
            break;
        }
        buf_append(b, s + run, i - run);
        buf_puts(b, rep);
        run = i + 1;
    }
    buf_append(b, s + run, len - run);
}
