/* ot_ws: WebSocket framing (RFC 6455): the handshake's accept key, client frames read, server
 * frame headers written. SHA-1 and base64 are nettle's. */
#include <nettle/base64.h>
#include <nettle/sha1.h>
#include <stdint.h>
#include <string.h>

#include "ot_ws.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

void
ot_ws_accept(const char *key, char out[29])
{
	struct sha1_ctx ctx;
	uint8_t d[SHA1_DIGEST_SIZE];

	sha1_init(&ctx);
	sha1_update(&ctx, strlen(key), (const uint8_t *)key);
	sha1_update(&ctx, sizeof WS_GUID - 1, (const uint8_t *)WS_GUID);
	sha1_digest(&ctx, sizeof d, d);
	base64_encode_raw(out, sizeof d, d); /* 20 bytes: 28 characters */
	out[BASE64_ENCODE_RAW_LENGTH(SHA1_DIGEST_SIZE)] = '\0';
}

/* A WebSocket frame header for a server frame of n payload bytes; returns its length. */
size_t
ot_ws_header(unsigned char *h, int opcode, size_t n)
{
	h[0] = (unsigned char)(0x80 | opcode);
	if (n < 126) {
		h[1] = (unsigned char)n;
		return 2;
	}
	if (n < 65536) {
		h[1] = 126;
		h[2] = (unsigned char)(n >> 8);
		h[3] = (unsigned char)n;
		return 4;
	}
	h[1] = 127;
	for (int i = 0; i < 8; i++)
		h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
	return 10;
}

/* Close status codes a peer may send (RFC 6455 7.4, and the IANA registry). */
static int
ws_code_valid(unsigned code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
	       (code >= 3000 && code <= 4999);
}

int
ot_ws_frame(const unsigned char *b, size_t n, size_t max, int *frag, struct ot_ws_frame *f)
{
	uint64_t len;
	size_t hl = 6; /* two bytes and the mask */

	memset(f, 0, sizeof *f);
	if (n < 2)
		return 0;
	f->fin = b[0] >> 7;
	f->opcode = b[0] & 0x0f;
	len = b[1] & 0x7f;
	/* No extension was agreed, so no RSV bit; a client masks every frame. */
	if ((b[0] & 0x70) || (f->opcode > 2 && f->opcode < 8) || f->opcode > 10 || !(b[1] & 0x80))
		goto protocol;
	if (f->opcode >= 8 && (!f->fin || len > 125))
		goto protocol;
	if ((f->opcode == 0 && !*frag) || ((f->opcode == 1 || f->opcode == 2) && *frag))
		goto protocol;
	hl += len == 126 ? 2 : len == 127 ? 8 : 0;
	if (n < hl)
		return 0;
	if (len == 126) {
		len = (uint64_t)b[2] << 8 | b[3];
	} else if (len == 127) {
		len = 0;
		for (int i = 0; i < 8; i++)
			len = len << 8 | b[2 + i];
	}
	if (len > max || hl + len > max) {
		f->code = 1009;
		return -1;
	}
	if (n < hl + len)
		return 0;
	f->head = hl;
	f->len = (size_t)len;
	f->mask = b + hl - 4;
	if (f->opcode == 8 && len == 1) /* half a status code: read no byte past the frame */
		goto protocol;
	if (f->opcode == 8 && len) {
		unsigned code = (unsigned)(b[hl] ^ f->mask[0]) << 8 | (b[hl + 1] ^ f->mask[1]);
		if (!ws_code_valid(code))
			goto protocol;
		f->code = (int)code;
	}
	if (f->opcode <= 2)
		*frag = !f->fin;
	return 1;
protocol:
	f->code = 1002;
	return -1;
}

