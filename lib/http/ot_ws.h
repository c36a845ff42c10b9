/* ot_ws: WebSocket framing (RFC 6455): the handshake's accept key, client frames read, server
 * frame headers written. */
#ifndef OT_WS_H
#define OT_WS_H

#include <stddef.h>

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key + GUID)). out gets 29 bytes. */
void ot_ws_accept(const char *key, char out[29]);

/* One frame from a WebSocket client, as ot_ws_frame read it. */
struct ot_ws_frame {
	int fin, opcode;
	size_t head, len;           /* header bytes (the masking key included), payload bytes */
	const unsigned char *mask;  /* the masking key, in the buffer */
	int code;                   /* a close frame's status (0: none), or the close code of a failure */
};
/* Reads the client frame at the start of buf[0, n). Returns 1 with *f when it is whole, 0 when
 * more bytes are needed, -1 when the connection must fail, f->code saying why: 1002 for RSV
 * bits, an unknown opcode, an unmasked frame, a control frame fragmented or over 125 bytes, a
 * continuation with no message begun or a new message inside a fragmented one, a close status
 * of one byte or not a valid code; 1009 for a frame of more than max bytes in all. *frag
 * carries whether a fragmented message is under way from frame to frame: 0 at the start. */
int ot_ws_frame(const unsigned char *buf, size_t n, size_t max, int *frag, struct ot_ws_frame *f);

/* The header of a server frame (FIN set, unmasked) with opcode and n payload bytes, into h (10
 * bytes at most). Returns its length. */
size_t ot_ws_header(unsigned char *h, int opcode, size_t n);

#endif
