/* Fuzzes the order id parser every boundary uses (HTTP path, stdin, Kafka): ot_id_canon takes a
 * UUID in any letter case to its one lower-case form and refuses everything else. What it takes
 * is 36 characters of lower-case hex and dashes in the 8-4-4-4-12 shape, is a UUID to
 * ot_uuid_valid, and canonicalises to itself again. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_event.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char id[64], again[64];
	size_t i;

	if (size >= sizeof id || memchr(data, '\0', size))
		return 0;
	memcpy(id, data, size);
	id[size] = '\0';
	if (ot_id_canon(id))
		return 0;
	if (strlen(id) != 36 || !ot_uuid_valid(id))
		abort();
	for (i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? id[i] != '-' : !isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i]))
			abort();
		/* the same characters as the input, only lower-cased */
		if (tolower(data[i]) != id[i])
			abort();
	}
	memcpy(again, id, sizeof id);
	if (ot_id_canon(again) || strcmp(again, id))
		abort();
	return 0;
}
