/* ot_text: text that leaves the process: in whole UTF-8 characters, and without secrets. */
#ifndef OT_TEXT_H
#define OT_TEXT_H

#include <stddef.h>

#include <jansson.h>

/* How every tool writes JSON: one line, fields in the order built, reals without noise digits. */
#define OT_JSON_FLAGS (JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10))

/* 1 when the n bytes at s are valid UTF-8 (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF), else 0. */
int ot_utf8_valid(const char *s, size_t n);

/* The length of the longest prefix of the string s, at most max bytes, that does not end inside
 * a character: s[ot_utf8_cut(s, max)] = '\0' truncates on a character boundary, including a
 * string snprintf already cut in the middle of one. Bytes that are not UTF-8 are left alone. */
size_t ot_utf8_cut(const char *s, size_t max);

/* Copies the string src into dst (dstsz bytes, NUL included), cut on a character boundary.
 * Returns the length written. dstsz must be at least 1. */
size_t ot_utf8_copy(char *dst, size_t dstsz, const char *src);

/* Copies the string src into dst as valid UTF-8: each byte that is not part of a valid character
 * is written as the four characters \xNN. Stops on a character (or escape) boundary when dst
 * (dstsz bytes, NUL included, at least 1) is full. Returns the length written. */
size_t ot_utf8_escape(char *dst, size_t dstsz, const char *src);

/* What stands in for a secret in redacted text. */
#define OT_REDACTED "***"

/* Copies a connection string into out (outsz bytes, NUL included) with its passwords replaced
 * by OT_REDACTED, for logs and error messages: libpq key=value conninfo (password and
 * sslpassword, quoted or not), postgresql:// and postgres:// URIs (user:password@ and
 * ?password=), and redis:// and rediss:// URLs (user:password@, or a bare password@ as
 * ot_redis_parse_url reads it). Anything else is copied as it is. Returns out. */
/* FNV-1a of the string: a cheap, stable spread of ids over buckets, stripes or TTLs. */
unsigned ot_hash32(const char *s);
/* 1 when key is one of the comma-separated keys, in a time that does not depend on where the
 * first difference is. */
int ot_key_listed(const char *keys, const char *key);
/* "90s", "15m", "2h" or plain seconds, in seconds; -1 if it is none of them. */
long ot_duration(const char *s);

char *ot_redact(const char *conn, char *out, size_t outsz);

/* Copies msg into out (outsz bytes, NUL included) with every occurrence of each password that
 * conn carries replaced by OT_REDACTED: for messages such as libpq's, which may quote the
 * connection string they failed to parse. Returns out. */
char *ot_redact_msg(const char *msg, const char *conn, char *out, size_t outsz);

#endif
