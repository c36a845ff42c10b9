/* Fuzzes the order API's route and id parser (ot_http_order_path, then ot_id_canon as the route
 * does): a path is one of the resources or none; a per-order path is "/orders/" + a non-empty
 * id segment without '/' + its suffix, exactly; and an id the canon takes is a lower-case UUID. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"
#include "ot_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const suffix[] = {
		[OT_RES_ORDER] = "", [OT_RES_CANCEL] = "/cancel", [OT_RES_EVENTS] = "/events", [OT_RES_WS] = "/ws",
	};
	char path[512], id[64], back[600];
	enum ot_order_res r;

	if (size >= sizeof path || memchr(data, '\0', size))
		return 0;
	memcpy(path, data, size);
	path[size] = '\0';
	r = ot_http_order_path(path, id, sizeof id);
	switch (r) {
	case OT_RES_NONE:
		if (id[0] || !strcmp(path, "/orders"))
			abort();
		return 0;
	case OT_RES_ORDERS:
		if (id[0] || strcmp(path, "/orders"))
			abort();
		return 0;
	case OT_RES_ORDER:
	case OT_RES_CANCEL:
	case OT_RES_EVENTS:
	case OT_RES_WS:
		break;
	default:
		abort();
	}
	if (!id[0] || strchr(id, '/'))
		abort();
	if (strlen(id) < sizeof id - 1) { /* not cut short: the path is exactly its parts */
		snprintf(back, sizeof back, "/orders/%s%s", id, suffix[r]);
		if (strcmp(back, path))
			abort();
	}
	if (!ot_id_canon(id) && (strlen(id) != 36 || !ot_uuid_valid(id)))
		abort();
	return 0;
}
