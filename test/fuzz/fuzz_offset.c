/* Fuzzes the -o offset parser. There is no separate function for it yet: -o is checked in
 * ot_config_opt and read again when partitions are assigned (ot_io.c). offset_parse below is the
 * one place to point at the pure parser once it exists. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Returns 0 and stores the offset in c, or -1 with errstr. */
static int
offset_parse(struct ot_config *c, const char *arg, char *errstr, size_t errsz)
{
	int r = ot_config_opt(c, 'o', arg, errstr, errsz);

	if (r == 0) /* -o is always an option ot_config_opt knows */
		abort();
	return r < 0 ? -1 : 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ot_config c;
	char err[512], *arg;

	if (memchr(data, '\0', size))
		return 0;
	if (!(arg = malloc(size + 1)))
		return 0;
	memcpy(arg, data, size);
	arg[size] = '\0';
	ot_config_init(&c, "fuzz");
	err[0] = '\0';
	if (offset_parse(&c, arg, err, sizeof err)) {
		if (!err[0] || c.offset)
			abort();
	} else if (!c.offset || strcmp(c.offset, arg)) {
		abort();
	}
	/* A second -o replaces the first without a leak. */
	offset_parse(&c, "end", err, sizeof err);
	ot_config_free(&c);
	free(arg);
	return 0;
}
