/* Fuzzes the event envelope parser (ot_event_parse): any bytes, as a Kafka value or a stdin line. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"
#include "ot_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ot_event ev, again;
	char err[512], *s1 = NULL, *s2 = NULL;

	ot_log_level = OT_LOG_ERROR + 1;
	err[0] = '\0';
	if (ot_event_parse(&ev, (const char *)data, size, err, sizeof err)) {
		if (!err[0] || ev.data) /* a refusal says why and leaves nothing to free */
			abort();
		return 0;
	}
	/* What the parser accepts is what the contract promises... */
	if (!ot_uuid_valid(ev.id) || !ot_rfc3339_valid(ev.ts) || !json_is_object(ev.data) ||
	    ev.version < 0 || !ev.type[0] || !ev.order_id[0] ||
	    (ev.traceparent[0] && !ot_traceparent_valid(ev.traceparent)))
		abort();
	/* ...and an envelope written back out parses to the same envelope. */
	if (!(s1 = ot_event_dump(&ev)) || ot_event_parse(&again, s1, strlen(s1), err, sizeof err))
		abort();
	if (!(s2 = ot_event_dump(&again)) || strcmp(s1, s2))
		abort();
	ot_event_clear(&again);
	ot_event_clear(&ev);
	free(s1);
	free(s2);
	return 0;
}
