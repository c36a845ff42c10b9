/* Fuzzes the -o offset parser: whatever it accepts is a name, or plain decimal digits that
 * fit and are the value it returns; what it refuses leaves a zeroed result. */
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = {"stored", "beginning", "end"};
	struct ot_offset o;
	char arg[64];
	const char *digits;
	long long v;

	if (size >= sizeof arg || memchr(data, '\0', size))
		return 0;
	memcpy(arg, data, size);
	arg[size] = '\0';
	if (ot_offset_parse(arg, &o)) {
		if (o.kind != 0 || o.value != 0)
			abort();
		return 0;
	}
	/* Accepted: the names are exact, and a number is plain decimal digits whose value it is. */
	switch (o.kind) {
	case OT_OFFSET_STORED:
	case OT_OFFSET_BEGINNING:
	case OT_OFFSET_END:
		if (o.value || strcmp(arg, names[o.kind]))
			abort();
		return 0;
	case OT_OFFSET_ABS: digits = arg; break;
	case OT_OFFSET_TAIL:
		if (arg[0] != '-' || o.value < 1 || o.value > OT_OFFSET_TAIL_MAX)
			abort();
		digits = arg + 1;
		break;
	case OT_OFFSET_TIME:
		if (strncmp(arg, "s@", 2))
			abort();
		digits = arg + 2;
		break;
	default: abort();
	}
	if (!*digits || o.value < 0)
		abort();
	for (v = 0; *digits; digits++) {
		if (*digits < '0' || *digits > '9' || v > (LLONG_MAX - (*digits - '0')) / 10)
			abort();
		v = v * 10 + (*digits - '0');
	}
	if (v != o.value)
		abort();
	return 0;
}
