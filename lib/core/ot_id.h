/* ot_id: random bytes, hex, SHA-256, and order ids (UUIDs) in their one canonical form. */
#ifndef OT_ID_H
#define OT_ID_H

#include <stddef.h>

#define OT_UUID_LEN 37   /* 36 chars + NUL */

/* n random bytes (/dev/urandom). */
void ot_random(unsigned char *buf, size_t n);
/* n bytes of b as 2n lower-case hex digits and a NUL, into out (2n + 1 bytes). */
void ot_hex(char *out, const unsigned char *b, size_t n);
/* 1 when s starts with n hex digits (either case). */
int ot_hex_valid(const char *s, size_t n);
/* The SHA-256 of p[0, n) as 64 hex digits and a NUL (nettle). */
void ot_sha256_hex(const void *p, size_t n, char out[65]);
/* A random (version 4) UUID in lower case. */
void ot_uuid(char out[OT_UUID_LEN]);
int ot_uuid_valid(const char *s);
/* An order id's one canonical form is a UUID in lower case. Lower-cases id in place and returns
 * 0 when it is a UUID in any letter case; returns -1 and leaves id as it was otherwise. Every
 * boundary (HTTP path, stdin, Kafka record) calls it before the id names a key, row or log line. */
int ot_id_canon(char *id);

#endif
