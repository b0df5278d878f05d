/* html.h — escaping for HTML text and attribute values. Every value that reaches a
 * page goes through html_escape; there is no other way to put text on a page. */
#ifndef BROKER_CORE_HTML_H
#define BROKER_CORE_HTML_H
#include <stddef.h>
#include "buf.h"

/* Append s[0..len) with & < > " ' escaped; control characters other than \t \n are dropped. */
void html_escape(buf_t *b, const char *s, size_t len);
#endif
