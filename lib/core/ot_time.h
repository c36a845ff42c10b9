/* ot_time: wall-clock timestamps in RFC 3339, and the monotonic clock for intervals. */
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

#endif
