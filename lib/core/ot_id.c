/* ot_id: random bytes, hex, SHA-256, and order ids (UUIDs) in their one canonical form. */
#include <fcntl.h>
#include <nettle/sha2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ot_id.h"

void
ot_random(unsigned char *buf, size_t n)
{
	static int fd = -1;
	size_t got = 0;
	ssize_t r;

	if (fd < 0)
		fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && got < n && (r = read(fd, buf + got, n - got)) > 0)
		got += (size_t)r;
	for (; got < n; got++) /* /dev/urandom unavailable: still unique enough per process */
		buf[got] = (unsigned char)(rand() ^ (int)clock() ^ getpid());
}

void
ot_hex(char *out, const unsigned char *b, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[b[i] >> 4];
		out[2 * i + 1] = digits[b[i] & 15];
	}
	out[2 * n] = '\0';
}

int
ot_hex_valid(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!s[i] || !strchr("0123456789abcdefABCDEF", s[i]))
			return 0;
	return 1;
}

void
ot_sha256_hex(const void *p, size_t n, char out[65])
{
	struct sha256_ctx ctx;
	uint8_t d[SHA256_DIGEST_SIZE];

	sha256_init(&ctx);
	sha256_update(&ctx, n, p);
	sha256_digest(&ctx, sizeof d, d);
	ot_hex(out, d, sizeof d);
}

void
ot_uuid(char out[OT_UUID_LEN])
{
	unsigned char b[16];
	char h[33];

	ot_random(b, sizeof b);
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	ot_hex(h, b, 16);
	snprintf(out, OT_UUID_LEN, "%.8s-%.4s-%.4s-%.4s-%.12s", h, h + 8, h + 12, h + 16, h + 20);
}

int
ot_uuid_valid(const char *s)
{
	return s && strlen(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' && s[23] == '-' &&
	       ot_hex_valid(s, 8) && ot_hex_valid(s + 9, 4) && ot_hex_valid(s + 14, 4) && ot_hex_valid(s + 19, 4) &&
	       ot_hex_valid(s + 24, 12);
}

int
ot_id_canon(char *id)
{
	char *p;

	if (!ot_uuid_valid(id))
		return -1;
	for (p = id; *p; p++)
		if (*p >= 'A' && *p <= 'F')
			*p = (char)(*p - 'A' + 'a');
	return 0;
}
