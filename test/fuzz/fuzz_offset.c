/* Fuzzes the -o offset parser: whatever it accepts reads back to the same text, and what it
 * refuses leaves a zeroed result. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ot_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"stored", "beginning", "end"};
	struct ot_offset o;
	char arg[64], back[64];

	if (size >= sizeof arg || memchr(data, '\0', size))
		return 0;
	memcpy(arg, data, size);
	arg[size] = '\0';
	if (ot_offset_parse(arg, &o)) {
		if (o.kind != 0 || o.value != 0)
			abort();
		return 0;
	}
	/* Accepted: the value prints back to exactly the input (plain decimal, no signs or spaces). */
	switch (o.kind) {
	case OT_OFFSET_STORED:
	case OT_OFFSET_BEGINNING:
	case OT_OFFSET_END:
		snprintf(back, sizeof back, "%s", names[o.kind]);
		break;
	case OT_OFFSET_ABS: snprintf(back, sizeof back, "%lld", o.value); break;
	case OT_OFFSET_TAIL:
		if (o.value < 1 || o.value > OT_OFFSET_TAIL_MAX)
			abort();
		snprintf(back, sizeof back, "-%lld", o.value);
		break;
	case OT_OFFSET_TIME: snprintf(back, sizeof back, "s@%lld", o.value); break;
	default: abort();
	}
	if (o.value < 0 || strcmp(back, arg))
		abort();
	return 0;
}
