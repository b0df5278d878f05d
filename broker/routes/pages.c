/* pages.c — the setup assistant's HTML frame (see pages.h).
 * Every value reaching a page goes through html_escape; there is no inline script or
 * style, so the CSP can forbid both. Tested by the browser-flow integration tests
 * and the headless-browser end-to-end test. */
#include "routes/pages.h"
#include <string.h>
#include "core/html.h"

const char PAGES_CSS[] =
    ":root{--fg:#1a1f36;--muted:#4f566b;--bg:#f6f9fc;--card:#fff;--accent:#533afd;--ok:#0a7f3f;--warn:#a3480a;"
    "--err:#b3093c;--line:#d8dee8}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);"
    "background:var(--bg)}\n"
    "header{background:#0a2540;color:#fff;padding:.75rem 1rem}\n"
    "header p{margin:0;font-weight:600}\n"
    "main{max-width:42rem;margin:1.5rem auto;padding:0 1rem}\n"
    "h1{font-size:1.5rem;margin:.5rem 0 1rem}\n"
    "h2{font-size:1.15rem;margin:0 0 .5rem}\n"
    "section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem 1.25rem;"
    "margin:0 0 1rem}\n"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}\n"
    "dt{color:var(--muted)}dd{margin:0;word-break:break-all}\n"
    ".ok{color:var(--ok);font-weight:600}.warn{color:var(--warn);font-weight:600}.err{color:var(--err)}\n"
    ".muted{color:var(--muted)}\n"
    "fieldset{border:0;padding:0;margin:0 0 .75rem}legend{font-weight:600;margin-bottom:.25rem}\n"
    "label{display:block;margin:.25rem 0}\n"
    "input[type=password],input[type=text]{width:100%;padding:.5rem;border:1px solid #8792a2;border-radius:6px;"
    "font:inherit}\n"
    "button,.button{display:inline-block;background:var(--accent);color:#fff;border:0;border-radius:6px;"
    "padding:.6rem 1.1rem;font:inherit;font-weight:600;text-decoration:none;cursor:pointer}\n"
    "button:focus,.button:focus,input:focus{outline:3px solid #ffb000;outline-offset:2px}\n"
    "ol.steps{padding-left:1.25rem;margin:0 0 1rem}\n"
    "@media (max-width:30rem){dl{grid-template-columns:1fr}main{margin-top:1rem}}\n";

void page_text(buf_t *out, const char *s)
{
    html_escape(out, s, strlen(s));
}

void page_begin(buf_t *out, const char *title)
{
    buf_puts(out, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>");
    page_text(out, title);
    buf_puts(out, " · Stripe for Salesforce</title>\n<link rel=\"stylesheet\" href=\"/setup/style.css\">\n</head>\n"
                  "<body>\n<header><p>Stripe for Salesforce · Setup</p></header>\n<main>\n<h1>");
    page_text(out, title);
    buf_puts(out, "</h1>\n");
}

void page_end(buf_t *out)
{
    buf_puts(out, "</main>\n</body>\n</html>\n");
}

void pages_error(breq_t *b, int status, const char *title, const char *message)
{
    buf_t out = {0};
    if (title == NULL)
        title = status >= 500 ? "Something went wrong" : status == 401 ? "Setup session needed" : "This request cannot be completed";
    page_begin(&out, title);
    buf_puts(&out, "<section>\n<p class=\"err\" role=\"alert\">");
    page_text(&out, message);
    buf_puts(&out, "</p>\n<p class=\"muted\">");
    if (status >= 500)
        buf_puts(&out, "This is usually temporary: wait a moment, then reload the page.");
    else
        buf_puts(&out, "To start again, open a new setup link from Salesforce (links are valid for 10 minutes and "
                       "work once).");
    buf_puts(&out, "</p>\n</section>\n");
    page_end(&out);
    breq_html(b, status, out.p, out.len, NULL);
    buf_free(&out);
}
