/* ot_text: UTF-8 cut on character boundaries, invalid bytes escaped rather than lost, and
 * passwords taken out of connection strings before they are shown. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* Appends n bytes of s to out at *o, as far as they fit; out stays NUL-terminated. */
static void
put(char *out, size_t outsz, size_t *o, const char *s, size_t n)
{
	if (*o + 1 >= outsz)
		return;
	if (n > outsz - 1 - *o)
		n = outsz - 1 - *o;
	memcpy(out + *o, s, n);
	*o += n;
	out[*o] = '\0';
}

static int
is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* The end of the value of a conninfo keyword that starts at p: a quoted value ends after its
 * unescaped closing quote (or at the end of a string that never closes it), a bare one at
 * the next space. Backslash escapes the next character in both. */
static const char *
value_end(const char *p)
{
	if (*p == '\'') {
		for (p++; *p && *p != '\''; p++)
			if (*p == '\\' && p[1])
				p++;
		return *p ? p + 1 : p;
	}
	for (; *p && !is_space(*p); p++)
		if (*p == '\\' && p[1])
			p++;
	return p;
}

/* The length of a URL's scheme and "://" at the start of s (RFC 3986: a letter, then letters,
 * digits, + - .), in any case; 0 when s is not a URL. */
static size_t
url_scheme(const char *s)
{
	size_t n = 0;

	if (!isalpha((unsigned char)s[0]))
		return 0;
	while (isalnum((unsigned char)s[n]) || s[n] == '+' || s[n] == '-' || s[n] == '.')
		n++;
	return strncmp(s + n, "://", 3) ? 0 : n + 3;
}

/* Calls each(arg, start, len) for every password value in conn (as it is written there): in a
 * URL of any scheme (redis://, REDIS://, postgresql://, one we do not know) the password of the
 * user information and of the query; in key = value pairs, password and sslpassword, in any
 * case. Redacting too much is harmless, printing a password is not. */
static void
each_secret(const char *conn, void (*each)(void *arg, const char *s, size_t n), void *arg)
{
	const char *p = conn, *k, *v, *e, *auth, *at, *q;
	size_t n = url_scheme(conn);
	int pg = n && (!strncasecmp(conn, "postgresql://", n) || !strncasecmp(conn, "postgres://", n));

	if (n) {
		auth = conn + n;
		/* The last @ ends the user information: a password may hold an unencoded @. */
		at = strrchr(auth, '@');
		if (at) {
			q = memchr(auth, ':', (size_t)(at - auth));
			if (q)
				each(arg, q + 1, (size_t)(at - q - 1));
			else if (!pg) /* redis://secret@host: the whole of it is the password */
				each(arg, auth, (size_t)(at - auth));
		}
		/* Query parameters: ?password=...&sslpassword=... */
		for (q = strchr(at ? at : auth, '?'); q; q = strchr(q + 1, '&')) {
			k = q + 1;
			if (!strncasecmp(k, "password=", 9))
				v = k + 9;
			else if (!strncasecmp(k, "sslpassword=", 12))
				v = k + 12;
			else
				continue;
			e = v + strcspn(v, "&#");
			each(arg, v, (size_t)(e - v));
		}
		return;
	}
	/* key = value pairs, as libpq reads them */
	while (*p) {
		while (is_space(*p))
			p++;
		if (!*p) /* trailing space: skipping a "word" here would step past the end */
			break;
		k = p;
		while (*p && *p != '=' && !is_space(*p))
			p++;
		e = p;
		while (is_space(*p))
			p++;
		if (*p != '=') { /* not key=value: skip the word */
			if (p == k)
				p++;
			continue;
		}
		p++;
		while (is_space(*p))
			p++;
		v = p;
		p = value_end(v);
		if (((size_t)(e - k) == 8 && !strncasecmp(k, "password", 8)) ||
		    ((size_t)(e - k) == 11 && !strncasecmp(k, "sslpassword", 11)))
			each(arg, v, (size_t)(p - v));
	}
}

struct spans {
	const char *s[8];
	size_t n[8];
	int count;
};

static void
add_span(void *arg, const char *s, size_t n)
{
	struct spans *sp = arg;

	if (n && sp->count < 8) {
		sp->s[sp->count] = s;
		sp->n[sp->count++] = n;
	}
}

char *
ot_redact(const char *conn, char *out, size_t outsz)
{
	struct spans sp = {{0}, {0}, 0};
	const char *p = conn;
	size_t o = 0;
	int i;

	if (!outsz)
		return out;
	out[0] = '\0';
	if (!conn)
		return out;
	each_secret(conn, add_span, &sp);
	for (i = 0; i < sp.count; i++) { /* the spans come in order and never overlap */
		put(out, outsz, &o, p, (size_t)(sp.s[i] - p));
		put(out, outsz, &o, OT_REDACTED, strlen(OT_REDACTED));
		p = sp.s[i] + sp.n[i];
	}
	put(out, outsz, &o, p, strlen(p));
	out[ot_utf8_cut(out, o)] = '\0';
	return out;
}

char *
ot_redact_msg(const char *msg, const char *conn, char *out, size_t outsz)
{
	struct spans sp = {{0}, {0}, 0};
	const char *p = msg, *best;
	size_t o = 0, bestn;
	int i;

	if (!outsz)
		return out;
	out[0] = '\0';
	if (!msg)
		return out;
	if (conn)
		each_secret(conn, add_span, &sp);
	/* Quoted values appear unquoted in messages too: match what is inside the quotes. */
	for (i = 0; i < sp.count; i++)
		if (sp.n[i] >= 2 && sp.s[i][0] == '\'' && sp.s[i][sp.n[i] - 1] == '\'') {
			sp.s[i]++;
			sp.n[i] -= 2;
		}
	while (*p) {
		best = NULL;
		bestn = 0;
		for (i = 0; i < sp.count; i++) {
			const char *hit;
			char *tmp;
			if (!sp.n[i] || !(tmp = strndup(sp.s[i], sp.n[i])))
				continue;
			hit = strstr(p, tmp);
			free(tmp);
			if (hit && (!best || hit < best || (hit == best && sp.n[i] > bestn))) {
				best = hit;
				bestn = sp.n[i];
			}
		}
		if (!best)
			break;
		put(out, outsz, &o, p, (size_t)(best - p));
		put(out, outsz, &o, OT_REDACTED, strlen(OT_REDACTED));
		p = best + bestn;
	}
	put(out, outsz, &o, p, strlen(p));
	out[ot_utf8_cut(out, o)] = '\0';
	return out;
}

unsigned
ot_hash32(const char *s)
{
	unsigned h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

long
ot_duration(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (end == s || v < 0)
		return -1;
	if (!*end || !strcmp(end, "s"))
		return v;
	if (!strcmp(end, "m"))
		return v * 60;
	if (!strcmp(end, "h"))
		return v * 3600;
	return -1;
}

int
ot_key_listed(const char *keys, const char *key)
{
	const char *k, *end;
	size_t kl = strlen(key);

	for (k = keys; *k; k = *end ? end + 1 : end) {
		size_t n = strcspn(k, ",");
		unsigned char diff = n != kl;

		end = k + n;
		for (size_t i = 0; i < n; i++)
			diff |= (unsigned char)(k[i] ^ (i < kl ? key[i] : 0));
		if (!diff)
			return 1;
	}
	return 0;
}
