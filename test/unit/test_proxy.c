/* Unit tests of ot_proxy: CIDR lists, addresses as forwarding headers write them, and the
 * client behind trusted proxies from X-Forwarded-For and Forwarded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "ot_proxy.h"

static char err[256];

/* The client ot_proxy_client finds behind the list in trusted. */
static const char *
client(const char *trusted, const char *peer, const char *xff, const char *fwd)
{
	static char out[OT_ADDR_MAX];
	struct ot_proxies *p = ot_proxies_parse(trusted, err, sizeof err);

	if (!p)
		fail_msg("%s: %s", trusted, err);
	ot_proxy_client(p, peer, xff, fwd, out, sizeof out);
	ot_proxies_free(p);
	return out;
}

static void
parses_ipv4_and_ipv6_ranges_and_single_addresses(void **state)
{
	struct ot_proxies *p;

	(void)state;
	p = ot_proxies_parse(" 10.0.0.0/8, 192.168.1.7 ,fd00::/8,::1, 172.16.0.0/12,[2001:db8::]/32", err, sizeof err);
	assert_non_null(p);
	assert_int_equal(ot_proxies_count(p), 6);
	assert_true(ot_proxies_has(p, "10.0.0.1"));
	assert_true(ot_proxies_has(p, "10.255.255.255"));
	assert_false(ot_proxies_has(p, "11.0.0.1"));
	assert_false(ot_proxies_has(p, "9.255.255.255"));
	assert_true(ot_proxies_has(p, "192.168.1.7"));
	assert_false(ot_proxies_has(p, "192.168.1.8"));
	assert_true(ot_proxies_has(p, "172.31.255.1"));
	assert_false(ot_proxies_has(p, "172.32.0.1"));
	assert_true(ot_proxies_has(p, "fd12:3456::1"));
	assert_true(ot_proxies_has(p, "FD00::ABCD"));
	assert_false(ot_proxies_has(p, "fe80::1"));
	assert_true(ot_proxies_has(p, "::1"));
	assert_false(ot_proxies_has(p, "::2"));
	assert_true(ot_proxies_has(p, "2001:db8:ffff::1"));
	assert_false(ot_proxies_has(p, "2001:db9::1"));
	/* an IPv4-mapped IPv6 peer (a dual-stack socket) is its IPv4 address */
	assert_true(ot_proxies_has(p, "::ffff:10.1.2.3"));
	/* not addresses */
	assert_false(ot_proxies_has(p, "unknown"));
	assert_false(ot_proxies_has(p, ""));
	assert_false(ot_proxies_has(NULL, "10.0.0.1"));
	ot_proxies_free(p);
}

static void
odd_prefixes_and_host_bits(void **state)
{
	struct ot_proxies *p;

	(void)state;
	p = ot_proxies_parse("10.1.2.3/12,2001:db8:8000::/33,0.0.0.0/0", err, sizeof err);
	assert_non_null(p);
	assert_true(ot_proxies_has(p, "10.15.0.1")); /* 10.0.0.0/12: host bits of 10.1.2.3 ignored */
	assert_true(ot_proxies_has(p, "2001:db8:8000::5"));
	assert_false(ot_proxies_has(p, "2001:db8:7fff::5"));
	assert_true(ot_proxies_has(p, "8.8.8.8")); /* /0: every IPv4 address ... */
	assert_false(ot_proxies_has(p, "2001:db9::1")); /* ... and no IPv6 one */
	ot_proxies_free(p);
	p = ot_proxies_parse("::/0", err, sizeof err);
	assert_true(ot_proxies_has(p, "2001:db9::1"));
	assert_false(ot_proxies_has(p, "8.8.8.8"));
	ot_proxies_free(p);
}

static void
refuses_what_is_not_a_range(void **state)
{
	static const char *const bad[] = {"10.0.0.0/33", "fd00::/129", "10.0.0/8", "10.0.0.0/", "10.0.0.0/-1",
	                                  "10.0.0.0/8,", "10.0.0.0/8,,::1", "example.com", "10.0.0.0/8 x",
	                                  "::1/1a", "[::1", "1.2.3.4:80/32", "10.0.0.0/0008"};
	struct ot_proxies *p;

	(void)state;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if ((p = ot_proxies_parse(bad[i], err, sizeof err))) {
			ot_proxies_free(p);
			fail_msg("\"%s\" was taken for a list of ranges", bad[i]);
		}
		assert_non_null(strstr(err, "is not an address or CIDR range"));
	}
	/* empty is an empty list */
	assert_non_null(p = ot_proxies_parse("", err, sizeof err));
	assert_int_equal(ot_proxies_count(p), 0);
	ot_proxies_free(p);
	assert_non_null(p = ot_proxies_parse("  ", err, sizeof err));
	assert_int_equal(ot_proxies_count(p), 0);
	ot_proxies_free(p);
	assert_non_null(p = ot_proxies_parse(NULL, err, sizeof err));
	ot_proxies_free(p);
}

static void
canonical_addresses_in_every_header_form(void **state)
{
	char out[OT_ADDR_MAX];
	static const char *const in[][2] = {
		{"192.0.2.1", "192.0.2.1"},     {"192.0.2.1:4711", "192.0.2.1"}, {" 192.0.2.1 ", "192.0.2.1"},
		{"2001:DB8::1", "2001:db8::1"}, {"[2001:db8::1]", "2001:db8::1"}, {"[2001:db8::1]:443", "2001:db8::1"},
		{"2001:db8:0:0:0:0:0:1", "2001:db8::1"}, {"::ffff:192.0.2.9", "192.0.2.9"},
		{"[::ffff:192.0.2.9]:80", "192.0.2.9"},
	};
	static const char *const bad[] = {"", "unknown", "_hidden", "192.0.2", "192.0.2.1:", "192.0.2.1:http",
	                                  "192.0.2.1:123456", "[2001:db8::1", "[2001:db8::1]x", "[192.0.2.1]",
	                                  "2001:db8::1%eth0", "192.0.2.256", "example.com"};

	(void)state;
	for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
		assert_int_equal(ot_addr_canon(in[i][0], strlen(in[i][0]), out, sizeof out), 0);
		assert_string_equal(out, in[i][1]);
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		if (!ot_addr_canon(bad[i], strlen(bad[i]), out, sizeof out))
			fail_msg("\"%s\" was taken for an address: %s", bad[i], out);
	/* only the length given is read */
	assert_int_equal(ot_addr_canon("10.0.0.1junk", 8, out, sizeof out), 0);
	assert_string_equal(out, "10.0.0.1");
}

/* The right-most address not trusted; spaces, ports and brackets as proxies write them. */
static void
x_forwarded_for_right_most_untrusted(void **state)
{
	(void)state;
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", NULL), "203.0.113.7");
	/* what the client wrote itself stands left of what the proxies appended */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "1.1.1.1, 203.0.113.7", NULL), "203.0.113.7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "1.1.1.1,203.0.113.7 , 10.2.0.1,10.3.0.1", NULL),
	                    "203.0.113.7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "\t198.51.100.2:5500 ,\t10.9.9.9 ", NULL), "198.51.100.2");
	assert_string_equal(client("10.0.0.0/8,fd00::/8", "fd00::1", "2001:db8::7, fd00::2", NULL), "2001:db8::7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "[2001:db8::7]:1234", NULL), "2001:db8::7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "\"203.0.113.7\"", NULL), "203.0.113.7");
	/* every address trusted: the left-most, the first hop */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "10.1.1.1, 10.2.2.2", NULL), "10.1.1.1");
	/* an entry that is not an address stops the walk at the trusted one right of it */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7, unknown, 10.2.2.2", NULL), "10.2.2.2");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7, junk", NULL), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7,", NULL), "10.0.0.5");
	/* empty is absent */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "", NULL), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", " ", NULL), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, NULL), "10.0.0.5");
}

/* RFC 7239: for= among other pairs, quoted, IPv6 in brackets, ports, several elements. */
static void
forwarded_right_most_untrusted(void **state)
{
	(void)state;
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=192.0.2.60;proto=http;by=203.0.113.43"),
	                    "192.0.2.60");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "For=\"[2001:db8:cafe::17]:4711\""),
	                    "2001:db8:cafe::17");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL,
	                           "for=192.0.2.43, for=\"[2001:db8:cafe::17]\";proto=https, for=10.1.1.1"),
	                    "2001:db8:cafe::17");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "proto=https; FOR = 198.51.100.17 ;by=10.0.0.1"),
	                    "198.51.100.17");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=\"198.51.100.17:8080\""), "198.51.100.17");
	/* a quoted comma or semicolon is part of its value, not a separator */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=192.0.2.1;x=\"a,b;c\", for=10.4.4.4"),
	                    "192.0.2.1");
	/* unknown and obfuscated identifiers are not addresses */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=192.0.2.1, for=unknown, for=10.4.4.4"),
	                    "10.4.4.4");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=_hidden"), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "by=10.0.0.1;proto=http"), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=\"[2001:db8::1\""), "10.0.0.5");
}

static void
headers_from_an_untrusted_peer_are_ignored(void **state)
{
	(void)state;
	assert_string_equal(client("10.0.0.0/8", "203.0.113.9", "1.2.3.4", "for=5.6.7.8"), "203.0.113.9");
	assert_string_equal(client("", "10.0.0.5", "1.2.3.4", NULL), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "2001:db8::9", "1.2.3.4", NULL), "2001:db8::9");
}

/* One of the two was written by the client unless they agree: neither is believed. */
static void
both_headers_must_agree(void **state)
{
	(void)state;
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", "for=203.0.113.7"), "203.0.113.7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", "for=\"[::ffff:203.0.113.7]\""),
	                    "203.0.113.7");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", "for=198.51.100.1"), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", "for=unknown"), "10.0.0.5");
	/* an empty one is absent */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", "203.0.113.7", ""), "203.0.113.7");
}

/* A list longer than any proxy chain: its right end counts; nothing is read past it. */
static void
long_and_hostile_lists(void **state)
{
	char xff[8192], fwd[8192];
	size_t n = 0;

	(void)state;
	n += (size_t)snprintf(xff + n, sizeof xff - n, "198.51.100.1");
	for (int i = 0; i < 500; i++)
		n += (size_t)snprintf(xff + n, sizeof xff - n, ", 10.%d.%d.1", i / 250, i % 250);
	/* all trusted past the kept window: the left-most kept one */
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", xff, NULL), "10.1.186.1");
	n = (size_t)snprintf(fwd, sizeof fwd, "for=\"");
	memset(fwd + n, 'a', 5000);
	strcpy(fwd + n + 5000, "\", for=192.0.2.1");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, fwd), "192.0.2.1");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, "for=\"unterminated, for=192.0.2.1"), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", ",,,,", NULL), "10.0.0.5");
	assert_string_equal(client("10.0.0.0/8", "10.0.0.5", NULL, ";;=;=,=,"), "10.0.0.5");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parses_ipv4_and_ipv6_ranges_and_single_addresses),
		cmocka_unit_test(odd_prefixes_and_host_bits),
		cmocka_unit_test(refuses_what_is_not_a_range),
		cmocka_unit_test(canonical_addresses_in_every_header_form),
		cmocka_unit_test(x_forwarded_for_right_most_untrusted),
		cmocka_unit_test(forwarded_right_most_untrusted),
		cmocka_unit_test(headers_from_an_untrusted_peer_are_ignored),
		cmocka_unit_test(both_headers_must_agree),
		cmocka_unit_test(long_and_hostile_lists),
	};
	return cmocka_run_group_tests_name("proxy", tests, NULL, NULL);
}
