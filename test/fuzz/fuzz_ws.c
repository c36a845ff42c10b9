/* Fuzzes the WebSocket frame parser (ot_ws_frame) over what a client may send on a live
 * stream: frames are read one after another as the server does, and whatever the parser takes
 * must be a frame RFC 6455 allows (masked, no RSV bits, a known opcode, control frames short and
 * final) that lies inside the buffer; whatever it refuses gets a close code. The same stream cut
 * into reads of any size must read the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_live.h"
#include "ot_ws.h"

#define MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Reads frames from d[0, n) as they come in `chunk`-byte steps; returns how many frames were
 * whole, with *fail the close code of a failure (0: none). */
static int
read_all(const uint8_t *d, size_t n, size_t chunk, int *fail)
{
	size_t have = 0, at = 0;
	int frag = 0, frames = 0, r;
	struct ot_ws_frame f;

	*fail = 0;
	while (at < n) {
		have = have + chunk < n ? have + chunk : n;
		while (at < have) {
			memset(&f, 0, sizeof f);
			r = ot_ws_frame(d + at, have - at, MAX, &frag, &f);
			if (r < 0) {
				if (f.code != 1002 && f.code != 1009)
					abort();
				*fail = f.code;
				return frames;
			}
			if (r == 0)
				break;
			if (f.head < 6 || f.head + f.len > have - at || !f.mask || f.mask < d + at ||
			    f.mask + 4 > d + at + f.head)
				abort(); /* a frame the server would read past, or an unmasked one */
			if (f.opcode >= 8 && (!f.fin || f.len > 125))
				abort();
			if (f.opcode != 0 && f.opcode != 1 && f.opcode != 2 && f.opcode != 8 && f.opcode != 9 &&
			    f.opcode != 10)
				abort();
			if (d[at] & 0x70)
				abort(); /* RSV bits */
			frames++;
			at += f.head + f.len;
			if (f.opcode == 8)
				return frames;
		}
		if (have == n)
			break;
	}
	return frames;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fail_whole, fail_cut, whole, cut;
	size_t chunk;

	if (size < 1)
		return 0;
	chunk = (size_t)data[0] % 16 + 1;
	whole = read_all(data + 1, size - 1, size, &fail_whole);
	cut = read_all(data + 1, size - 1, chunk, &fail_cut);
	if (whole != cut || fail_whole != fail_cut)
		abort();
	return 0;
}
