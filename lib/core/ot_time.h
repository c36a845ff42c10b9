/* ot_time: wall-clock timestamps in RFC 3339, the monotonic clock for intervals, retry backoff. */
#ifndef OT_TIME_H
#define OT_TIME_H

#define OT_TS_LEN 32

/* Now as 2026-11-24T18:00:00.123Z. */
void ot_now_rfc3339(char out[OT_TS_LEN]);
int ot_rfc3339_valid(const char *s);
/* Parses an RFC 3339 time or a count of milliseconds since the epoch. Returns 0 or -1. */
int ot_time_ms(const char *s, long long *ms);
/* Milliseconds on the monotonic clock: for intervals and deadlines, never for timestamps. */
long long ot_now_ms(void);
/* The same clock in microseconds. */
long long ot_now_us(void);
/* How long to wait before retry number attempt (0-based): first_ms doubling up to max_ms, then
 * a random point between half of that and all of it, so that clients failing together do not
 * retry together. */
long ot_backoff_ms(int attempt, long first_ms, long max_ms);

#endif
