/* ot_proxy: CIDR lists, and the client address behind trusted proxies from X-Forwarded-For or
 * Forwarded. */
#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ot_err.h"
#include "ot_proxy.h"

#define ENTRIES 64 /* entries of a forwarding header looked at, from the right */

/* An address in binary: 4 bytes for IPv4, 16 for IPv6. */
struct addr {
	int v6;
	unsigned char b[16];
};

struct ot_proxies {
	size_t n;
	struct net {
		struct addr a; /* host bits cleared */
		int bits;
	} *nets;
};

/* s[0..len) without the space around it. */
static void
trim(const char **s, size_t *len)
{
	while (*len && isspace((unsigned char)**s))
		(*s)++, (*len)--;
	while (*len && isspace((unsigned char)(*s)[*len - 1]))
		(*len)--;
}

static int
all_digits(const char *s, size_t len)
{
	if (!len || len > 5)
		return 0;
	for (size_t i = 0; i < len; i++)
		if (s[i] < '0' || s[i] > '9')
			return 0;
	return 1;
}

/* Parses the forms ot_addr_canon takes into a, those with a port only if ports; an IPv4-mapped
 * IPv6 address becomes IPv4. Returns 0, or -1. */
static int
parse_addr(const char *s, size_t len, int ports, struct addr *a)
{
	char buf[OT_ADDR_MAX];
	const char *colon = memchr(s, ':', len), *end;
	static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(a, 0, sizeof *a);
	if (len && s[0] == '[') { /* [v6] or [v6]:port */
		if (!(end = memchr(s, ']', len)))
			return -1;
		if ((size_t)(end - s) + 1 < len &&
		    (!ports || end[1] != ':' || !all_digits(end + 2, len - (size_t)(end - s) - 2)))
			return -1;
		s++;
		len = (size_t)(end - s);
		a->v6 = 1;
	} else if (colon && !memchr(colon + 1, ':', len - (size_t)(colon - s) - 1)) { /* a.b.c.d:port */
		if (!ports || !all_digits(colon + 1, len - (size_t)(colon - s) - 1))
			return -1;
		len = (size_t)(colon - s);
	} else {
		a->v6 = colon != NULL;
	}
	if (!len || len >= sizeof buf)
		return -1;
	memcpy(buf, s, len);
	buf[len] = '\0';
	if (inet_pton(a->v6 ? AF_INET6 : AF_INET, buf, a->b) != 1)
		return -1;
	if (a->v6 && !memcmp(a->b, mapped, sizeof mapped)) {
		memmove(a->b, a->b + 12, 4);
		memset(a->b + 4, 0, 12);
		a->v6 = 0;
	}
	return 0;
}

int
ot_addr_canon(const char *s, size_t len, char *out, size_t outsz)
{
	struct addr a;

	if (outsz)
		out[0] = '\0';
	trim(&s, &len);
	if (outsz < OT_ADDR_MAX || parse_addr(s, len, 1, &a))
		return -1;
	return inet_ntop(a.v6 ? AF_INET6 : AF_INET, a.b, out, (socklen_t)outsz) ? 0 : -1;
}

/* 1 when a lies in net. */
static int
in_net(const struct net *net, const struct addr *a)
{
	int full = net->bits / 8, rest = net->bits % 8;

	if (net->a.v6 != a->v6 || memcmp(net->a.b, a->b, (size_t)full))
		return 0;
	return !rest || ((net->a.b[full] ^ a->b[full]) & (0xff << (8 - rest)) & 0xff) == 0;
}

/* One "addr[/bits]" of a list into n. Returns 0, or -1. */
static int
parse_net(const char *s, size_t len, struct net *n)
{
	const char *slash = memchr(s, '/', len);
	int max, bits = 0, full, rest;

	if (parse_addr(s, slash ? (size_t)(slash - s) : len, 0, &n->a))
		return -1;
	max = n->a.v6 ? 128 : 32;
	if (!slash) {
		n->bits = max;
		return 0;
	}
	len -= (size_t)(slash - s) + 1;
	if (!len || len > 3)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (slash[1 + i] < '0' || slash[1 + i] > '9')
			return -1;
		bits = bits * 10 + (slash[1 + i] - '0');
	}
	if (bits > max)
		return -1;
	n->bits = bits;
	full = bits / 8;
	rest = bits % 8;
	if (rest)
		n->a.b[full++] &= (unsigned char)(0xff << (8 - rest));
	memset(n->a.b + full, 0, 16 - (size_t)full);
	return 0;
}

struct ot_proxies *
ot_proxies_parse(const char *list, char *errstr, size_t errsz)
{
	struct ot_proxies *p = calloc(1, sizeof *p);
	const char *s = list ? list : "", *e;
	size_t cap = 0, len = strlen(s);

	if (!p) {
		ot_err(-1, errstr, errsz, "out of memory");
		return NULL;
	}
	trim(&s, &len);
	for (; len; s = e + 1) { /* "" or spaces alone: no ranges */
		e = s + strcspn(s, ",");
		len = (size_t)(e - s);
		trim(&s, &len);
		if (p->n == cap) {
			struct net *nn = realloc(p->nets, (cap = cap ? 2 * cap : 8) * sizeof *nn);
			if (!nn) {
				ot_err(-1, errstr, errsz, "out of memory");
				goto fail;
			}
			p->nets = nn;
		}
		if (!len || parse_net(s, len, &p->nets[p->n])) {
			ot_err(-1, errstr, errsz, "\"%.*s\" is not an address or CIDR range (10.0.0.0/8, fd00::/8)",
			       (int)(len > 64 ? 64 : len), s);
			goto fail;
		}
		p->n++;
		if (!*e)
			break;
	}
	return p;
fail:
	ot_proxies_free(p);
	return NULL;
}

void
ot_proxies_free(struct ot_proxies *p)
{
	if (!p)
		return;
	free(p->nets);
	free(p);
}

size_t
ot_proxies_count(const struct ot_proxies *p)
{
	return p ? p->n : 0;
}

static int
has(const struct ot_proxies *p, const struct addr *a)
{
	for (size_t i = 0; p && i < p->n; i++)
		if (in_net(&p->nets[i], a))
			return 1;
	return 0;
}

int
ot_proxies_has(const struct ot_proxies *p, const char *addr)
{
	struct addr a;
	const char *s = addr ? addr : "";
	size_t len = strlen(s);

	trim(&s, &len);
	return !parse_addr(s, len, 0, &a) && has(p, &a);
}

/* The end of the list element that starts at s, where s[0..len) holds a list of elements
 * separated by commas; a comma inside a quoted string (Forwarded) does not end one. */
static const char *
element_end(const char *s, const char *end)
{
	int quoted = 0;

	for (; s < end; s++) {
		if (quoted && *s == '\\' && s + 1 < end)
			s++;
		else if (*s == '"')
			quoted = !quoted;
		else if (!quoted && *s == ',')
			return s;
	}
	return end;
}

/* The for= value of a Forwarded element e[0..len) into buf, quotes and escapes removed.
 * Returns its length, or -1 when it has none. */
static int
forwarded_for(const char *e, size_t len, char *buf, size_t bufsz)
{
	const char *end = e + len, *p = e, *name, *v;
	size_t nl, n;

	while (p < end) {
		while (p < end && (isspace((unsigned char)*p) || *p == ';'))
			p++;
		name = p;
		while (p < end && *p != '=' && *p != ';')
			p++;
		nl = (size_t)(p - name);
		trim(&name, &nl);
		if (p >= end || *p != '=')
			continue;
		p++;
		while (p < end && isspace((unsigned char)*p))
			p++;
		n = 0;
		if (p < end && *p == '"') {
			for (p++; p < end && *p != '"'; p++) {
				if (*p == '\\' && p + 1 < end)
					p++;
				if (n + 1 < bufsz)
					buf[n++] = *p;
			}
			if (p < end)
				p++;
		} else {
			for (v = p; p < end && *p != ';'; p++)
				;
			n = (size_t)(p - v);
			trim(&v, &n);
			if (n >= bufsz)
				n = bufsz - 1;
			memcpy(buf, v, n);
		}
		buf[n] = '\0';
		if (nl == 3 && !strncasecmp(name, "for", 3))
			return (int)n;
	}
	return -1;
}

/* The client a header's list names, as ot_proxy_client says, into out (binary). Returns 1 when
 * it named one, 0 when it yields none (empty, or its right-most entry is not an address). */
static int
from_list(const struct ot_proxies *p, const char *list, int forwarded, struct addr *out)
{
	const char *end = list + strlen(list), *elem[ENTRIES], *s, *e;
	size_t elen[ENTRIES], count = 0, i, len;
	char buf[128];
	struct addr a;
	int found = 0, n;

	/* The elements' bounds, left to right, keeping the last ENTRIES: a proxy chain is short. */
	for (s = list;; s = e + 1) {
		e = element_end(s, end);
		if (count == ENTRIES) {
			memmove(elem, elem + 1, (ENTRIES - 1) * sizeof elem[0]);
			memmove(elen, elen + 1, (ENTRIES - 1) * sizeof elen[0]);
			count--;
		}
		elem[count] = s;
		elen[count++] = (size_t)(e - s);
		if (e >= end)
			break;
	}
	for (i = count; i-- > 0;) {
		s = elem[i];
		len = elen[i];
		trim(&s, &len);
		if (forwarded) {
			if ((n = forwarded_for(s, len, buf, sizeof buf)) < 0)
				return found;
			s = buf;
			len = (size_t)n;
			trim(&s, &len);
		} else if (len >= 2 && s[0] == '"' && s[len - 1] == '"') {
			s++;
			len -= 2;
		}
		if (parse_addr(s, len, 1, &a))
			return found;
		*out = a;
		found = 1;
		if (!has(p, &a))
			return 1;
	}
	return found;
}

static int
blank(const char *s)
{
	if (!s)
		return 1;
	while (isspace((unsigned char)*s))
		s++;
	return !*s;
}

void
ot_proxy_client(const struct ot_proxies *p, const char *peer, const char *xff, const char *fwd, char *out,
                size_t outsz)
{
	struct addr a, b, *c = NULL;
	int has_a = 0, has_b = 0;

	snprintf(out, outsz, "%s", peer);
	if (!ot_proxies_has(p, peer))
		return;
	if (!blank(xff))
		has_a = from_list(p, xff, 0, &a);
	if (!blank(fwd))
		has_b = from_list(p, fwd, 1, &b);
	/* Both there: a client wrote one of them; unless they agree, believe neither. */
	if (!blank(xff) && !blank(fwd))
		c = has_a && has_b && a.v6 == b.v6 && !memcmp(a.b, b.b, 16) ? &a : NULL;
	else
		c = has_a ? &a : has_b ? &b : NULL;
	if (c && outsz >= OT_ADDR_MAX)
		inet_ntop(c->v6 ? AF_INET6 : AF_INET, c->b, out, (socklen_t)outsz);
}
