/* Unit tests of the WebSocket handshake key, live streams under a real MHD, and the circuit breaker. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "ot_breaker.h"
#include "ot_live.h"
#include "ot_ws.h"

static void
ws_accept_matches_rfc6455(void **state)
{
	char out[29];

	(void)state;
	/* The example of RFC 6455, section 1.3. */
	ot_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", out);
	assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	ot_ws_accept("x3JJHMbDL1EzLkh9GBhXDw==", out);
	assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

/* ---- client frames (RFC 6455, section 5) ---- */

/* A masked client frame: header byte b0, payload p of n bytes masked with 1 2 3 4. */
static size_t
frame(unsigned char *out, unsigned char b0, const char *p, size_t n)
{
	static const unsigned char mask[4] = {1, 2, 3, 4};
	size_t h = 2;

	out[0] = b0;
	if (n < 126) {
		out[1] = (unsigned char)(0x80 | n);
	} else {
		out[1] = 0x80 | 126;
		out[2] = (unsigned char)(n >> 8);
		out[3] = (unsigned char)n;
		h = 4;
	}
	memcpy(out + h, mask, 4);
	for (size_t i = 0; i < n; i++)
		out[h + 4 + i] = (unsigned char)p[i] ^ mask[i % 4];
	return h + 4 + n;
}

/* What ot_ws_frame says of buf with no fragmented message under way: 1, 0, or the close code. */
static int
verdict(const unsigned char *buf, size_t n)
{
	struct ot_ws_frame f;
	int frag = 0, rc = ot_ws_frame(buf, n, 4096, &frag, &f);

	return rc < 0 ? f.code : rc;
}

static void
ws_frame_reads_whole_masked_frames(void **state)
{
	unsigned char b[512];
	struct ot_ws_frame f;
	size_t n = frame(b, 0x89, "hi", 2);
	int frag = 0;

	(void)state;
	assert_int_equal(ot_ws_frame(b, n, 4096, &frag, &f), 1);
	assert_int_equal(f.opcode, 9);
	assert_int_equal(f.head, 6);
	assert_int_equal(f.len, 2);
	assert_int_equal(b[f.head] ^ f.mask[0], 'h');
	/* any prefix asks for more */
	for (size_t i = 0; i < n; i++)
		assert_int_equal(verdict(b, i), 0);
	/* a 16-bit length */
	char big[300];
	memset(big, 'a', sizeof big);
	n = frame(b, 0x81, big, sizeof big);
	assert_int_equal(ot_ws_frame(b, n, 4096, &frag, &f), 1);
	assert_int_equal(f.head, 8);
	assert_int_equal(f.len, 300);
	/* a close with a status, which the parser reads */
	n = frame(b, 0x88, "\x03\xe8" "bye", 5);
	assert_int_equal(ot_ws_frame(b, n, 4096, &frag, &f), 1);
	assert_int_equal(f.code, 1000);
	n = frame(b, 0x88, "", 0);
	assert_int_equal(ot_ws_frame(b, n, 4096, &frag, &f), 1);
	assert_int_equal(f.code, 0);
}

static void
ws_frame_refuses_what_rfc6455_forbids(void **state)
{
	unsigned char b[512];
	char body[126];

	(void)state;
	/* unmasked */
	assert_int_equal(verdict((const unsigned char *)"\x81\x02hi", 4), 1002);
	/* RSV1, RSV2, RSV3 */
	assert_int_equal(verdict(b, frame(b, 0xc1, "x", 1)), 1002);
	assert_int_equal(verdict(b, frame(b, 0xa1, "x", 1)), 1002);
	assert_int_equal(verdict(b, frame(b, 0x91, "x", 1)), 1002);
	/* reserved opcodes 3-7 and 11-15 */
	for (unsigned op = 3; op < 16; op++)
		if (op < 8 || op > 10)
			assert_int_equal(verdict(b, frame(b, (unsigned char)(0x80 | op), "x", 1)), 1002);
	/* a control frame over 125 bytes, or fragmented */
	memset(body, 'p', sizeof body);
	assert_int_equal(verdict(b, frame(b, 0x89, body, 126)), 1002);
	assert_int_equal(verdict(b, frame(b, 0x89, body, 125)), 1);
	assert_int_equal(verdict(b, frame(b, 0x09, "x", 1)), 1002);
	assert_int_equal(verdict(b, frame(b, 0x08, "", 0)), 1002);
	/* a close status of one byte, or not a code one may send */
	assert_int_equal(verdict(b, frame(b, 0x88, "\x03", 1)), 1002);
	{ /* the same, read from a buffer that ends with it: no byte past it is read (fuzz_ws) */
		size_t n = frame(b, 0x88, "\x03", 1);
		unsigned char *exact = malloc(n);
		assert_non_null(exact);
		memcpy(exact, b, n);
		assert_int_equal(verdict(exact, n), 1002);
		free(exact);
	}
	assert_int_equal(verdict(b, frame(b, 0x88, "\x03\xed", 2)), 1002);   /* 1005 */
	assert_int_equal(verdict(b, frame(b, 0x88, "\x03\xe7", 2)), 1002);   /* 999 */
	assert_int_equal(verdict(b, frame(b, 0x88, "\x0b\xb8", 2)), 1);      /* 3000 */
	/* a continuation with nothing to continue */
	assert_int_equal(verdict(b, frame(b, 0x80, "x", 1)), 1002);
	/* too big for max, whatever the length field */
	static const unsigned char huge[14] = {0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 3, 4};
	assert_int_equal(verdict(huge, sizeof huge), 1009);
}

static void
ws_frame_follows_fragmented_messages(void **state)
{
	unsigned char b[64];
	struct ot_ws_frame f;
	int frag = 0;

	(void)state;
	assert_int_equal(ot_ws_frame(b, frame(b, 0x01, "a", 1), 4096, &frag, &f), 1);
	assert_int_equal(frag, 1);
	/* a ping between fragments is allowed */
	assert_int_equal(ot_ws_frame(b, frame(b, 0x89, "", 0), 4096, &frag, &f), 1);
	assert_int_equal(ot_ws_frame(b, frame(b, 0x00, "b", 1), 4096, &frag, &f), 1);
	assert_int_equal(frag, 1);
	/* a new message before this one ended */
	assert_int_equal(ot_ws_frame(b, frame(b, 0x81, "c", 1), 4096, &frag, &f), -1);
	assert_int_equal(f.code, 1002);
	assert_int_equal(ot_ws_frame(b, frame(b, 0x80, "d", 1), 4096, &frag, &f), 1);
	assert_int_equal(frag, 0);
}

/* ---- a WebSocket stream served by a real MHD daemon ---- */

#define BACKLOG 240
static struct ot_live *tlv;
static struct ot_live_event backlog[BACKLOG];
static char big[1024];

static enum MHD_Result
ws_handler(void *cls, struct MHD_Connection *con, const char *url, const char *method,
           const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	const char *key = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Sec-WebSocket-Key");
	int full;

	(void)cls, (void)url, (void)method, (void)version, (void)upload, (void)upload_size;
	if (!*con_cls) {
		*con_cls = calloc(1, sizeof(void *));
		return MHD_YES;
	}
	return ot_live_ws(tlv, con, key, "o-1", 0, backlog, BACKLOG, &full, *con_cls);
}

static void
ws_completed(void *cls, struct MHD_Connection *con, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls, (void)con, (void)toe;
	if (*con_cls)
		ot_live_ws_abandon(*(void **)*con_cls);
	free(*con_cls);
	*con_cls = NULL;
}

/* A daemon on a free loopback port whose connections have small send buffers, so a client
 * that does not read blocks the stream's send soon. */
static struct MHD_Daemon *
ws_daemon(int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof a;
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;

	assert_true(fd >= 0);
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(fd, 8), 0);
	getsockname(fd, (struct sockaddr *)&a, &al);
	*port = ntohs(a.sin_port);
	return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
	                        MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE, 0, NULL, NULL, ws_handler, NULL,
	                        MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED, ws_completed, NULL,
	                        MHD_OPTION_END);
}

/* Connects a client that reads its 101 and nothing after. */
static int
stalled_client(int port)
{
	static const char req[] = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	                          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 2048;
	char head[512];
	size_t n = 0;

	a.sin_port = htons((uint16_t)port);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
	assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
	while (n < sizeof head - 1 && (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4)))
		assert_int_equal(read(fd, head + n++, 1), 1);
	head[n] = '\0';
	assert_memory_equal(head, "HTTP/1.1 101", 12);
	return fd;
}

/* A stream blocked in a send to a client that does not read is ended and its thread joined
 * before ot_live_close_all returns: nothing of it outlives ot_live_stop. */
static void
close_all_ends_a_stream_blocked_in_send(void **state)
{
	struct timespec ts = {0, 300 * 1000000L};
	struct ot_live_stats st;
	struct MHD_Daemon *d;
	char err[256];
	int port, fd;

	(void)state;
	memset(big, 'x', sizeof big - 1);
	for (int i = 0; i < BACKLOG; i++)
		backlog[i] = (struct ot_live_event){i + 1, big};
	assert_non_null(tlv = ot_live_start("redis://127.0.0.1:1/0", 300, 8, NULL, 0, err, sizeof err));
	assert_non_null(d = ws_daemon(&port));
	fd = stalled_client(port);
	nanosleep(&ts, NULL);
	ot_live_read(tlv, &st);
	assert_int_equal(st.ws, 1);
	ot_live_close_all(tlv);
	ot_live_read(tlv, &st);
	assert_int_equal(st.ws, 0);
	MHD_stop_daemon(d);
	ot_live_stop(tlv);
	close(fd);
}

static void
breaker_opens_after_threshold_and_fails_fast(void **state)
{
	struct ot_breaker b;
	long opens, rejected;

	(void)state;
	ot_breaker_init(&b, "test", 3, 60000);
	for (int i = 0; i < 2; i++) {
		assert_true(ot_breaker_allow(&b));
		ot_breaker_done(&b, 0);
	}
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_CLOSED);
	/* a success in between starts the count again */
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);
	for (int i = 0; i < 3; i++) {
		assert_true(ot_breaker_allow(&b));
		ot_breaker_done(&b, 0);
	}
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_OPEN);
	assert_int_equal(opens, 1);
	assert_false(ot_breaker_allow(&b));
	assert_false(ot_breaker_allow(&b));
	ot_breaker_read(&b, &opens, &rejected);
	assert_int_equal(rejected, 2);
	ot_breaker_destroy(&b);
}

static void
breaker_half_open_lets_one_probe_through(void **state)
{
	struct timespec ts = {0, 30 * 1000000L};
	struct ot_breaker b;
	long opens, rejected;

	(void)state;
	ot_breaker_init(&b, "test", 1, 20);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 0);
	assert_false(ot_breaker_allow(&b));
	nanosleep(&ts, NULL);
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_HALF_OPEN);
	assert_true(ot_breaker_allow(&b));  /* the probe */
	assert_false(ot_breaker_allow(&b)); /* others wait for it */
	ot_breaker_done(&b, 0);             /* it failed: open again */
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_OPEN);
	nanosleep(&ts, NULL);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);             /* it worked: closed */
	assert_int_equal(ot_breaker_read(&b, &opens, &rejected), OT_BREAKER_CLOSED);
	assert_true(ot_breaker_allow(&b));
	ot_breaker_done(&b, 1);
	assert_int_equal(opens, 2);
	ot_breaker_destroy(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(ws_accept_matches_rfc6455),
		cmocka_unit_test(ws_frame_reads_whole_masked_frames),
		cmocka_unit_test(ws_frame_refuses_what_rfc6455_forbids),
		cmocka_unit_test(ws_frame_follows_fragmented_messages),
		cmocka_unit_test(close_all_ends_a_stream_blocked_in_send),
		cmocka_unit_test(breaker_opens_after_threshold_and_fails_fast),
		cmocka_unit_test(breaker_half_open_lets_one_probe_through),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
