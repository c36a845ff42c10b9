/* Fuzzes the pgoutput decoder (ot_pgo_decode) with what a replication stream may carry, and the
 * snapshot reader (ot_pgo_xid_visible). A decoded message's slices lie inside the input, and the
 * decoder allocates nothing, so a malformed Insert can leak nothing. The first byte picks the
 * target. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_pgoutput.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
inside(const struct ot_pgo_str *s, const uint8_t *buf, size_t size)
{
	if (s->p && ((const uint8_t *)s->p < buf || (const uint8_t *)s->p + s->len > buf + size))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ot_pgo_msg m;
	char snap[256];
	int i, r;

	if (size < 1)
		return 0;
	if (data[0] & 1) {
		if (size - 1 >= sizeof snap || size < 5)
			return 0;
		memcpy(snap, data + 5, size - 5);
		snap[size - 5] = '\0';
		r = ot_pgo_xid_visible((uint32_t)data[1] << 24 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 8 | data[4],
		                       snap);
		if (r < -1 || r > 1)
			abort();
		return 0;
	}
	data++, size--;
	if (ot_pgo_decode(data, size, &m))
		return 0;
	if (m.ncols < 0 || m.ncols > OT_PGO_MAX_COLS)
		abort();
	if (m.type && m.type != 'B' && m.type != 'C' && m.type != 'R' && m.type != 'I')
		abort();
	inside(&m.relname, data, size);
	for (i = 0; i < m.ncols; i++)
		inside(&m.cols[i], data, size);
	return 0;
}
