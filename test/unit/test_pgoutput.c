/* Unit tests of the pgoutput decoder and of transaction visibility from a snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "ot_pgoutput.h"

/* A message builder: bytes appended to buf. */
struct b { unsigned char buf[512]; size_t n; };
static void u8(struct b *b, unsigned v) { b->buf[b->n++] = (unsigned char)v; }
static void u16(struct b *b, unsigned v) { u8(b, v >> 8 & 0xff); u8(b, v & 0xff); }
static void u32(struct b *b, uint32_t v) { u16(b, v >> 16); u16(b, v & 0xffff); }
static void u64(struct b *b, uint64_t v) { u32(b, (uint32_t)(v >> 32)); u32(b, (uint32_t)v); }
static void str(struct b *b, const char *s) { memcpy(b->buf + b->n, s, strlen(s) + 1); b->n += strlen(s) + 1; }
static void col(struct b *b, const char *s) { u8(b, 't'); u32(b, (uint32_t)strlen(s)); memcpy(b->buf + b->n, s, strlen(s)); b->n += strlen(s); }

static int
slice_is(struct ot_pgo_str s, const char *want)
{
	return s.len == strlen(want) && !memcmp(s.p, want, s.len);
}

static void
begin_and_commit_carry_xid_and_lsns(void **state)
{
	struct b b = {0};
	struct ot_pgo_msg m;

	(void)state;
	u8(&b, 'B'); u64(&b, 0x100000200ULL); u64(&b, 0); u32(&b, 4242);
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), 0);
	assert_int_equal(m.type, 'B');
	assert_int_equal(m.xid, 4242);
	assert_true(m.lsn == 0x100000200ULL);
	b.n = 0;
	u8(&b, 'C'); u8(&b, 0); u64(&b, 0x10); u64(&b, 0xABCDEF01ULL); u64(&b, 0);
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), 0);
	assert_int_equal(m.type, 'C');
	assert_true(m.lsn == 0xABCDEF01ULL);
	/* one byte short of each */
	assert_int_equal(ot_pgo_decode(b.buf, b.n - 1, &m), -1);
	b.n = 0;
	u8(&b, 'B'); u64(&b, 1); u64(&b, 0); u16(&b, 0);
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), -1);
}

static void
relation_and_insert_decode_in_place(void **state)
{
	struct b b = {0};
	struct ot_pgo_msg m;

	(void)state;
	u8(&b, 'R'); u32(&b, 77); str(&b, "public"); str(&b, "outbox"); u8(&b, 'd'); u16(&b, 2);
	u8(&b, 1); str(&b, "id"); u32(&b, 20); u32(&b, 0xffffffff);
	u8(&b, 0); str(&b, "payload"); u32(&b, 25); u32(&b, 0xffffffff);
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), 0);
	assert_int_equal(m.type, 'R');
	assert_int_equal(m.relid, 77);
	assert_true(slice_is(m.relname, "outbox"));
	assert_int_equal(m.ncols, 2);
	assert_true(slice_is(m.cols[1], "payload"));

	b.n = 0;
	u8(&b, 'I'); u32(&b, 77); u8(&b, 'N'); u16(&b, 3); col(&b, "12"); u8(&b, 'n'); col(&b, "{\"a\":1}");
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), 0);
	assert_int_equal(m.type, 'I');
	assert_int_equal(m.ncols, 3);
	assert_true(slice_is(m.cols[0], "12"));
	assert_int_equal(m.isnull[1], 1);
	assert_true(slice_is(m.cols[2], "{\"a\":1}"));
}

/* Every truncation of a valid insert is refused, and nothing is allocated to leak (the old
 * decoder copied columns and lost them when a later column was bad). */
static void
malformed_inserts_are_refused(void **state)
{
	struct b b = {0};
	struct ot_pgo_msg m;
	size_t cut;

	(void)state;
	u8(&b, 'I'); u32(&b, 77); u8(&b, 'N'); u16(&b, 2); col(&b, "12"); col(&b, "payload");
	for (cut = 1; cut < b.n; cut++)
		assert_int_equal(ot_pgo_decode(b.buf, cut, &m), -1);
	/* a length past the end */
	b.n = 0;
	u8(&b, 'I'); u32(&b, 77); u8(&b, 'N'); u16(&b, 1); u8(&b, 't'); u32(&b, 1000); u8(&b, 'x');
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), -1);
	/* an unknown column kind, and an old tuple instead of a new one */
	b.n = 0;
	u8(&b, 'I'); u32(&b, 77); u8(&b, 'N'); u16(&b, 1); u8(&b, 'z');
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), -1);
	b.n = 0;
	u8(&b, 'I'); u32(&b, 77); u8(&b, 'K'); u16(&b, 0);
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), -1);
	/* a relation whose name runs off the end */
	b.n = 0;
	u8(&b, 'R'); u32(&b, 1); str(&b, "public"); u8(&b, 'o');
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), -1);
	/* other message types are not ours */
	b.n = 0;
	u8(&b, 'U');
	assert_int_equal(ot_pgo_decode(b.buf, b.n, &m), 0);
	assert_int_equal(m.type, 0);
	assert_int_equal(ot_pgo_decode(b.buf, 0, &m), -1);
}

static void
visibility_follows_the_snapshot(void **state)
{
	(void)state;
	assert_int_equal(ot_pgo_xid_visible(100, "105:110:"), 1);      /* below xmin */
	assert_int_equal(ot_pgo_xid_visible(107, "105:110:"), 1);      /* done, not in progress */
	assert_int_equal(ot_pgo_xid_visible(107, "105:110:106,107"), 0); /* still in progress */
	assert_int_equal(ot_pgo_xid_visible(110, "105:110:"), 0);      /* at xmax: not yet */
	assert_int_equal(ot_pgo_xid_visible(200, "105:110:"), 0);
	/* epochs: the snapshot carries them, the stream's 32-bit xid does not */
	assert_int_equal(ot_pgo_xid_visible(5, "4294967300:4294967310:"), 1);
	assert_int_equal(ot_pgo_xid_visible(15, "4294967300:4294967310:"), 0);
	assert_int_equal(ot_pgo_xid_visible(4294967290u, "4294967300:4294967310:"), 1); /* last epoch */
	assert_int_equal(ot_pgo_xid_visible(11, "4294967300:4294967310:4294967308,4294967309"), 1);
	assert_int_equal(ot_pgo_xid_visible(12, "4294967300:4294967310:4294967308,4294967309"), 0);
	assert_int_equal(ot_pgo_xid_visible(1, ""), -1);
	assert_int_equal(ot_pgo_xid_visible(1, "x:1:"), -1);
	assert_int_equal(ot_pgo_xid_visible(1, "5:3:"), -1);
	assert_int_equal(ot_pgo_xid_visible(5, "3:9:4,x"), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(begin_and_commit_carry_xid_and_lsns),
		cmocka_unit_test(relation_and_insert_decode_in_place),
		cmocka_unit_test(malformed_inserts_are_refused),
		cmocka_unit_test(visibility_follows_the_snapshot),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
