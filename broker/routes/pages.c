/* pages.c — the setup assistant's HTML frame (see pages.h).
 * Every value reaching a page goes through html_escape; there is no inline script or
 * style, so the CSP can forbid both. The look: one centred column of cards, a step
 * indicator, notices that say what happened and what to do next; readable at 320 px,
 * keyboard-visible focus, WCAG AA contrast (checked by axe-core in tests/e2e). Tested by
 * the browser-flow integration tests and the headless-browser end-to-end test. */
#include "routes/pages.h"
#include <string.h>
#include "core/html.h"
#include "routes/routes.h"

const char PAGES_CSS[] =
    ":root{--fg:#1a1f36;--muted:#4f566b;--bg:#f6f9fc;--card:#fff;--accent:#533afd;--accent-dark:#3a22d9;"
    "--ok:#0a7f3f;--ok-bg:#e8f6ee;--warn:#8a3c00;--warn-bg:#fff4e5;--err:#a30835;--err-bg:#fdecf0;"
    "--info-bg:#eef1ff;--line:#d8dee8}\n"
    "*{box-sizing:border-box}\n"
    "html{-webkit-text-size-adjust:100%}\n"
    "body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);"
    "background:var(--bg);min-height:100vh;display:flex;flex-direction:column}\n"
    "a{color:var(--accent-dark)}\n"
    "header{background:#0a2540;color:#fff;padding:.75rem 1rem}\n"
    "header p{margin:0 auto;max-width:40rem;font-weight:600;display:flex;align-items:center;gap:.5rem}\n"
    ".mark{display:inline-flex;align-items:center;justify-content:center;width:1.6rem;height:1.6rem;"
    "border-radius:6px;background:#635bff;color:#fff;font-weight:700}\n"
    ".product-sub{font-weight:400;color:#c9d3e0}\n"
    "main{flex:1;width:100%;max-width:42rem;margin:1.5rem auto;padding:0 1rem}\n"
    "h1{font-size:1.6rem;line-height:1.25;margin:.25rem 0 .75rem}\n"
    "h2{font-size:1.15rem;line-height:1.3;margin:0 0 .5rem}\n"
    "p{margin:.5rem 0}\n"
    ".lead{font-size:1.05rem}\n"
    "section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1rem 1.25rem;"
    "margin:0 0 1rem}\n"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.35rem 1rem;margin:0}\n"
    "dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere;min-width:0}\n"
    ".ok{color:var(--ok);font-weight:600}.warn{color:var(--warn);font-weight:600}.err{color:var(--err)}\n"
    ".muted{color:var(--muted)}\n"
    ".notice{border-radius:10px;padding:.85rem 1rem;margin:0 0 1rem;border:1px solid;border-left-width:6px}\n"
    ".notice p{margin:.2rem 0}\n"
    ".notice-ok{background:var(--ok-bg);border-color:var(--ok)}\n"
    ".notice-info{background:var(--info-bg);border-color:var(--accent)}\n"
    ".notice-warn{background:var(--warn-bg);border-color:#c05600}\n"
    ".notice-err{background:var(--err-bg);border-color:var(--err)}\n"
    ".notice strong{overflow-wrap:anywhere}\n"
    "ol.progress{list-style:none;display:flex;gap:.5rem;padding:0;margin:0 0 1rem;counter-reset:step}\n"
    "ol.progress li{flex:1;display:flex;align-items:center;gap:.5rem;background:var(--card);"
    "border:1px solid var(--line);border-radius:10px;padding:.5rem .65rem;line-height:1.25;min-width:0}\n"
    "ol.progress li::before{counter-increment:step;content:counter(step);flex:none;display:inline-flex;"
    "align-items:center;justify-content:center;width:1.6rem;height:1.6rem;border-radius:50%;"
    "border:2px solid var(--muted);color:var(--muted);font-weight:700;font-size:.9rem}\n"
    "ol.progress li.done::before{content:'\\2713';background:var(--ok);border-color:var(--ok);color:#fff}\n"
    "ol.progress li.current{border-color:var(--accent);box-shadow:0 0 0 1px var(--accent)}\n"
    "ol.progress li.current::before{border-color:var(--accent);color:var(--accent-dark)}\n"
    ".step-name{display:block;font-weight:600}\n"
    ".step-state{display:block;font-size:.85rem;color:var(--muted)}\n"
    "li.done .step-state{color:var(--ok)}li.current .step-state{color:var(--accent-dark)}\n"
    "fieldset{border:0;padding:0;margin:0 0 .75rem;min-width:0}\n"
    "legend{font-weight:600;margin-bottom:.25rem;padding:0}\n"
    "label{display:block;margin:.25rem 0;font-weight:600}\n"
    "label.option{display:flex;gap:.65rem;align-items:flex-start;font-weight:400;border:1px solid var(--line);"
    "border-radius:8px;padding:.65rem .8rem;margin:.5rem 0;cursor:pointer}\n"
    "label.option:has(input:checked){border-color:var(--accent);background:var(--info-bg)}\n"
    "label.option input{margin:.3rem 0 0;flex:none;width:1.1rem;height:1.1rem;accent-color:var(--accent)}\n"
    ".option-name{display:block;font-weight:600}\n"
    ".option-hint{display:block;color:var(--muted);font-size:.95rem}\n"
    ".hint{color:var(--muted);font-size:.95rem;margin:.25rem 0 .5rem}\n"
    "input[type=password],input[type=text]{width:100%;padding:.6rem;border:1px solid #6b7385;border-radius:6px;"
    "font:inherit;background:#fff;color:var(--fg)}\n"
    "button,.button{display:inline-block;background:var(--accent);color:#fff;border:0;border-radius:6px;"
    "padding:.65rem 1.15rem;font:inherit;font-weight:600;line-height:1.3;text-decoration:none;cursor:pointer;"
    "text-align:center;max-width:100%}\n"
    "button:hover,.button:hover{background:var(--accent-dark)}\n"
    "button.secondary{background:#fff;color:var(--accent-dark);box-shadow:inset 0 0 0 1px var(--accent)}\n"
    "button.secondary:hover{background:var(--info-bg)}\n"
    "a:focus-visible,button:focus-visible,input:focus-visible,label.option:focus-within{outline:3px solid #ffb000;"
    "outline-offset:2px}\n"
    ".actions{margin:.75rem 0 0}\n"
    ".code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.95em}\n"
    "footer{color:var(--muted);font-size:.875rem;padding:0 1rem 1.5rem}\n"
    "footer p{max-width:40rem;margin:0 auto}\n"
    "@media (max-width:36rem){ol.progress{flex-direction:column}main{margin-top:1rem}"
    "section{padding:.9rem 1rem}h1{font-size:1.4rem}.button,button{display:block;width:100%}}\n"
    "@media (max-width:30rem){dl{grid-template-columns:1fr;gap:0}dd{margin-bottom:.4rem}}\n";

void page_text(buf_t *out, const char *s)
{
    html_escape(out, s, strlen(s));
}

void page_begin(buf_t *out, const char *base, const char *title)
{
    buf_puts(out, "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                  "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                  "<meta name=\"robots\" content=\"noindex\">\n<title>");
    page_text(out, title);
    buf_printf(out, " · Stripe for Salesforce</title>\n<link rel=\"stylesheet\" href=\"%s/setup/style.css\">\n"
                    "</head>\n", base);
    buf_puts(out, "<body>\n<header><p><span class=\"mark\" aria-hidden=\"true\">S</span><span>Stripe for Salesforce "
                  "<span class=\"product-sub\">· Setup assistant</span></span></p></header>\n<main>\n<h1>");
    page_text(out, title);
    buf_puts(out, "</h1>\n");
}

void page_end(buf_t *out)
{
    buf_puts(out, "</main>\n<footer><p>Setup links from Salesforce work once and for 10 minutes; a setup session "
                  "lasts 30 minutes. Stripe keys and secrets are stored encrypted and are never shown on these "
                  "pages.</p></footer>\n</body>\n</html>\n");
}

static void error_page(breq_t *b, int status, const char *title, const char *message, int back_to_setup)
{
    buf_t out = {0};
    if (title == NULL)
        title = status >= 500 ? "Something went wrong" : status == 401 ? "Setup session needed" : "This request cannot be completed";
    page_begin(&out, b->w->cfg->public_path, title);
    buf_puts(&out, "<div class=\"notice notice-err\" role=\"alert\">\n<p>");
    page_text(&out, message);
    buf_puts(&out, "</p>\n</div>\n<section aria-labelledby=\"next-h\">\n<h2 id=\"next-h\">What to do next</h2>\n<p>");
    if (status >= 500)
        buf_puts(&out, "This is usually temporary: wait a moment, then try again. If it keeps happening, tell the "
                       "team that runs this service.");
    else if (back_to_setup)
        buf_puts(&out, "Go back to the setup page and try again. If the setup page says that the session has "
                       "ended, open a new setup link from Salesforce.");
    else
        buf_puts(&out, "Go back to Salesforce and start the Stripe setup again to get a new setup link (links are "
                       "valid for 10 minutes and work once).");
    buf_puts(&out, "</p>\n");
    if (back_to_setup)
        buf_printf(&out, "<p class=\"actions\"><a class=\"button\" href=\"%s/setup\">Back to the setup page</a></p>\n",
                   b->w->cfg->public_path);
    buf_printf(&out, "<p class=\"muted\">Reference: HTTP %d.</p>\n</section>\n", status);
    page_end(&out);
    /* every 401 names a challenge (RFC 9110 15.5.2); breq_error may have added it already */
    if (status == 401 && breq_live(b) && h2o_find_header(&b->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, -1) == -1)
        h2o_add_header(&b->req->pool, &b->req->res.headers, H2O_TOKEN_WWW_AUTHENTICATE, NULL, H2O_STRLIT("Bearer"));
    breq_html(b, status, out.p, out.len, NULL);
    buf_free(&out);
}

void pages_error(breq_t *b, int status, const char *title, const char *message)
{
    error_page(b, status, title, message, 0);
}

void pages_error_setup(breq_t *b, int status, const char *title, const char *message)
{
    error_page(b, status, title, message, 1);
}

/* A page route's error (breq_error): the error page, with the error's default message
 * when the caller gave none. */
static void render_error(breq_t *b, int status, api_err_t e, const char *message)
{
    pages_error(b, status, NULL, message != NULL ? message : api_err_message(e));
}

const route_kind_t route_kind_page = {"page", render_error, 1, 0};
