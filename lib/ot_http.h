/* ot_http: the Order Service HTTP API and tracking page behind ot-serve. */
#ifndef OT_HTTP_H
#define OT_HTTP_H

#include <stddef.h>

struct ot_config;
struct ot_http;

/* Binds cfg->http_addr ("[host:]port"; no host means every IPv4 interface, "[v6]:port" IPv6),
 * migrates the orders database once, then serves on a pool of four threads, each with its own
 * PostgreSQL and Redis connections made on its first request. The orders database must answer
 * at start; Redis need not (reads then come from the database). Returns NULL with *rc and
 * errstr: OT_ESERVICE when the database is unreachable or the address is in use, OT_ECONFIG
 * for a bad address or Redis URL. Free with ot_http_stop. */
struct ot_http *ot_http_start(const struct ot_config *cfg, int *rc, char *errstr, size_t errsz);
/* Stops accepting, lets requests in flight finish (up to 5 s), stops serving and frees every
 * connection. Accepts NULL. */
void ot_http_stop(struct ot_http *h);

/* The tracking page: build/lib/ot_page.c, generated from lib/page/index.html by scripts/embed-page. */
extern const char ot_page_html[];

#endif
