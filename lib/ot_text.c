/* ot_text: UTF-8 cut on character boundaries, and invalid bytes escaped rather than lost. */
#include <stdio.h>
#include <string.h>

#include "ot_text.h"

/* The length (1 to 4) of the valid character that starts the n bytes at p; 0 when they do not
 * start one; -1 when they are the valid beginning of a character cut short at n. */
static int
char_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xBF;
	size_t need, i;

	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xC2 && p[0] <= 0xDF)
		need = 2;
	else if (p[0] >= 0xE0 && p[0] <= 0xEF)
		need = 3;
	else if (p[0] >= 0xF0 && p[0] <= 0xF4)
		need = 4;
	else
		return 0; /* a continuation byte, C0/C1 (overlong) or F5..FF */
	if (p[0] == 0xE0)
		lo = 0xA0; /* overlong */
	else if (p[0] == 0xED)
		hi = 0x9F; /* surrogates */
	else if (p[0] == 0xF0)
		lo = 0x90; /* overlong */
	else if (p[0] == 0xF4)
		hi = 0x8F; /* above U+10FFFF */
	for (i = 1; i < need; i++) {
		if (i >= n)
			return -1;
		if (i == 1 ? p[1] < lo || p[1] > hi : (p[i] & 0xC0) != 0x80)
			return 0;
	}
	return (int)need;
}

int
ot_utf8_valid(const char *s, size_t n)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t i = 0;
	int k;

	while (i < n) {
		if ((k = char_len(p + i, n - i)) <= 0)
			return 0;
		i += (size_t)k;
	}
	return 1;
}

size_t
ot_utf8_cut(const char *s, size_t max)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strnlen(s, max), i = 0;
	int k;

	while (i < n) {
		k = char_len(p + i, n - i);
		if (k < 0)
			break; /* the last character does not fit whole */
		i += k ? (size_t)k : 1;
	}
	return i;
}

size_t
ot_utf8_copy(char *dst, size_t dstsz, const char *src)
{
	size_t n = ot_utf8_cut(src, dstsz - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
	return n;
}

size_t
ot_utf8_escape(char *dst, size_t dstsz, const char *src)
{
	const unsigned char *p = (const unsigned char *)src;
	size_t n = strlen(src), i = 0, o = 0;
	int k;

	while (i < n) {
		k = char_len(p + i, n - i);
		if (k > 0) {
			if (o + (size_t)k >= dstsz)
				break;
			memcpy(dst + o, p + i, (size_t)k);
			o += (size_t)k;
			i += (size_t)k;
		} else {
			if (o + 4 >= dstsz)
				break;
			snprintf(dst + o, 5, "\\x%02X", p[i]);
			o += 4;
			i++;
		}
	}
	dst[o] = '\0';
	return o;
}

