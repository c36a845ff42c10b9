/* ot_pgoutput: pgoutput decoding without copies, and transaction visibility from a snapshot. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ot_pgoutput.h"

struct rd { const unsigned char *p, *end; };

static int
need(struct rd *r, size_t n)
{
	return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

static uint64_t
u64(struct rd *r)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | *r->p++;
	return v;
}

static uint32_t
u32(struct rd *r)
{
	uint32_t v = (uint32_t)r->p[0] << 24 | (uint32_t)r->p[1] << 16 | (uint32_t)r->p[2] << 8 | r->p[3];

	r->p += 4;
	return v;
}

static unsigned
u16(struct rd *r)
{
	unsigned v = (unsigned)r->p[0] << 8 | r->p[1];

	r->p += 2;
	return v;
}

/* A NUL-terminated string; the slice excludes the NUL. */
static int
cstr(struct rd *r, struct ot_pgo_str *s)
{
	const unsigned char *z = memchr(r->p, 0, (size_t)(r->end - r->p));

	if (!z)
		return -1;
	s->p = (const char *)r->p;
	s->len = (size_t)(z - r->p);
	r->p = z + 1;
	return 0;
}

static int
relation(struct rd *r, struct ot_pgo_msg *m)
{
	struct ot_pgo_str ns, name;
	unsigned i, n;

	if (need(r, 4))
		return -1;
	m->relid = u32(r);
	if (cstr(r, &ns) || cstr(r, &m->relname) || need(r, 3))
		return -1;
	r->p++; /* replica identity */
	n = u16(r);
	for (i = 0; i < n; i++) {
		if (need(r, 1))
			return -1;
		r->p++; /* flags */
		if (cstr(r, &name) || need(r, 8))
			return -1;
		r->p += 8; /* type oid, typmod */
		if (i < OT_PGO_MAX_COLS)
			m->cols[i] = name;
	}
	m->ncols = n < OT_PGO_MAX_COLS ? (int)n : OT_PGO_MAX_COLS;
	return 0;
}

static int
insert(struct rd *r, struct ot_pgo_msg *m)
{
	unsigned i, n;
	uint32_t len;
	char kind;

	if (need(r, 7))
		return -1;
	m->relid = u32(r);
	if (*r->p++ != 'N')
		return -1;
	n = u16(r);
	for (i = 0; i < n; i++) {
		if (need(r, 1))
			return -1;
		kind = (char)*r->p++;
		if (kind == 't') {
			if (need(r, 4))
				return -1;
			len = u32(r);
			if (need(r, len))
				return -1;
			if (i < OT_PGO_MAX_COLS)
				m->cols[i] = (struct ot_pgo_str){(const char *)r->p, len};
			r->p += len;
		} else if (kind == 'n' || kind == 'u') {
			if (i < OT_PGO_MAX_COLS)
				m->isnull[i] = 1;
		} else {
			return -1;
		}
	}
	m->ncols = n < OT_PGO_MAX_COLS ? (int)n : OT_PGO_MAX_COLS;
	return 0;
}

int
ot_pgo_decode(const unsigned char *buf, size_t len, struct ot_pgo_msg *m)
{
	struct rd r = {buf, buf + len};

	memset(m, 0, sizeof *m);
	if (need(&r, 1))
		return -1;
	switch (*r.p++) {
	case 'B': /* final LSN, commit time, xid */
		if (need(&r, 20))
			return -1;
		m->type = 'B';
		m->lsn = u64(&r);
		r.p += 8;
		m->xid = u32(&r);
		return 0;
	case 'C': /* flags, commit LSN, end LSN, commit time */
		if (need(&r, 25))
			return -1;
		m->type = 'C';
		r.p += 9;
		m->lsn = u64(&r);
		return 0;
	case 'R':
		m->type = 'R';
		return relation(&r, m);
	case 'I':
		m->type = 'I';
		return insert(&r, m);
	default:
		return 0; /* origin, type, truncate, update, delete, message: not ours */
	}
}

int
ot_pgo_xid_visible(uint32_t xid, const char *snapshot)
{
	unsigned long long xmin, xmax, x, full;
	char *end;
	const char *s = snapshot;

	errno = 0;
	xmin = strtoull(s, &end, 10);
	if (end == s || *end != ':')
		return -1;
	s = end + 1;
	xmax = strtoull(s, &end, 10);
	if (end == s || *end != ':' || errno || xmin > xmax)
		return -1;
	/* The snapshot's ids carry the epoch; the stream's do not. xid is within 2^31 of xmax. */
	full = xmax + (unsigned long long)(long long)(int32_t)(xid - (uint32_t)xmax);
	if (full >= xmax)
		return 0;
	if (full < xmin)
		return 1;
	s = end + 1;
	while (*s) {
		x = strtoull(s, &end, 10);
		if (end == s || (*end && *end != ',') || errno)
			return -1;
		if (x == full)
			return 0;
		s = *end ? end + 1 : end;
	}
	return 1;
}
