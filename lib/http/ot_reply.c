/* ot_reply: the answers ot-serve's routes share — 405, 503 while the database is down, 500,
 * 404 for an order, 401 — each one JSON line. */
#include <microhttpd.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "ot_err.h"
#include "ot_http_int.h"
#include "ot_log.h"

enum MHD_Result
ot_reply_not_allowed(struct call *x, const char *const *allow)
{
	return reply_error(x, 405, "method not allowed", allow);
}

enum MHD_Result
ot_reply_unavailable(struct call *x)
{
	static const char *const retry[] = {"Retry-After", "1", NULL};

	return reply_error(x, 503, "the orders database is unavailable", retry);
}

/* The answer to a failed library call: 503 while a service is down, else 500. */
enum MHD_Result
ot_reply_failed(struct call *x, int rc, const char *err)
{
	OT_WARN(x->rq->order_id, "%s %s: %s", x->rq->method, x->rq->path, err);
	/* A race still lost after the second look is worth a retry, like a service down. */
	return rc == OT_ESERVICE || rc == OT_ERACE ? ot_reply_unavailable(x) : reply_error(x, 500, "internal error", NULL);
}

int
ot_reply_is_json(const char *ctype)
{
	return ctype && !strncasecmp(ctype, "application/json", 16) &&
	       (!ctype[16] || ctype[16] == ';' || ctype[16] == ' ');
}

enum MHD_Result
ot_reply_not_found(struct call *x, const char *id)
{
	return reply_json(x, 404, json_pack("{s:s, s:s}", "error", "order not found", "order_id", id), NULL);
}

enum MHD_Result
ot_reply_unauthorized(struct call *x)
{
	static const char *const www[] = {"WWW-Authenticate", "Bearer realm=\"ordertrack\"", NULL};

	return reply_error(x, 401, x->h->api_keys ? "a valid API key is required: Authorization: Bearer KEY"
	                                          : "writes are disabled: ot-serve runs without OT_API_KEY", www);
}
