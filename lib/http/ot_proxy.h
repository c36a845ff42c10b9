/* ot_proxy: who the client is behind trusted reverse proxies, from address ranges (CIDR) and
 * the X-Forwarded-For and Forwarded (RFC 7239) headers those proxies append to. Pure: no I/O. */
#ifndef OT_PROXY_H
#define OT_PROXY_H

#include <stddef.h>

#define OT_ADDR_MAX 46 /* an address as text, IPv6 included, with its NUL (INET6_ADDRSTRLEN) */

struct ot_proxies;

/* Parses "CIDR[,CIDR...]": IPv4 ranges (10.0.0.0/8), IPv6 ranges (fd00::/8) or single
 * addresses (a /32 or /128), with spaces around each ignored. Host bits past the prefix are
 * ignored. NULL or "" is an empty list. Returns the list (free with ot_proxies_free), or NULL
 * with errstr naming the entry that is not a range. */
struct ot_proxies *ot_proxies_parse(const char *list, char *errstr, size_t errsz);
/* Accepts NULL. */
void ot_proxies_free(struct ot_proxies *p);
/* Ranges in p; 0 for NULL. */
size_t ot_proxies_count(const struct ot_proxies *p);
/* 1 when the address addr (text, as ot_addr_canon takes it) is in one of p's ranges; 0 when it
 * is not, is not an address, or p is NULL. An IPv4-mapped IPv6 address is its IPv4 one. */
int ot_proxies_has(const struct ot_proxies *p, const char *addr);

/* The canonical text of the address in s[0..len): IPv4 dotted, IPv6 as inet_ntop writes it
 * (RFC 5952), an IPv4-mapped IPv6 address as IPv4. Takes the forms forwarding headers carry:
 * "a.b.c.d", "a.b.c.d:port", "v6", "[v6]" and "[v6]:port". Returns 0 with out filled (outsz >=
 * OT_ADDR_MAX), or -1 when it is not an address (out then ""). */
int ot_addr_canon(const char *s, size_t len, char *out, size_t outsz);

/* The client address of a request whose TCP peer is peer (canonical text) and whose
 * X-Forwarded-For and Forwarded headers are xff and fwd (every occurrence joined with ", "; NULL
 * when absent): peer itself when p does not trust it. From a trusted peer, the right-most
 * address of the header's list that p does not trust (every proxy appends the address it was
 * reached from, so what lies left of the first untrusted one may be the client's invention); if
 * every address is trusted, the left-most; if an entry is not an address ("unknown", an
 * obfuscated name, junk), the trusted one right of it, or peer. X-Forwarded-For entries may
 * carry a port or brackets; Forwarded's for= may be quoted, in brackets, with a port. When both
 * headers are there and name different clients, one was written by the client, so neither is
 * believed: peer. A header that is empty counts as absent. out gets OT_ADDR_MAX bytes at most. */
void ot_proxy_client(const struct ot_proxies *p, const char *peer, const char *xff, const char *fwd, char *out,
                     size_t outsz);

#endif
