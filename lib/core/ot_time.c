/* ot_time: wall-clock timestamps in RFC 3339, the monotonic clock for intervals, retry backoff. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ot_time.h"

void
ot_now_rfc3339(char out[OT_TS_LEN])
{
	struct timespec ts;
	struct tm tm;
	char buf[24];

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, OT_TS_LEN, "%.19s.%03dZ", buf, (int)(ts.tv_nsec / 1000000));
}

int
ot_rfc3339_valid(const char *s)
{
	int y, mo, d, h, mi, sec, n = 0;
	const char *p;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
		return 0;
	if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return 0;
	p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return 0;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	if ((*p == 'Z' || *p == 'z') && !p[1])
		return 1;
	return (*p == '+' || *p == '-') && strlen(p) == 6 && p[3] == ':';
}

int
ot_time_ms(const char *s, long long *ms)
{
	struct tm tm;
	int y, mo, d, h, mi, sec, n = 0, oh = 0, om = 0;
	long long frac = 0, scale = 1000;
	const char *p;
	char *end;

	if (!s || !*s)
		return -1;
	*ms = strtoll(s, &end, 10);
	if (!*end)
		return *ms >= 0 ? 0 : -1;
	if (!ot_rfc3339_valid(s) ||
	    sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6)
		return -1;
	p = s + n;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
	if (*p == '+' || *p == '-') {
		sscanf(p + 1, "%2d:%2d", &oh, &om);
		if (*p == '-')
			oh = -oh, om = -om;
	}
	memset(&tm, 0, sizeof tm);
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	*ms = ((long long)timegm(&tm) - oh * 3600LL - om * 60LL) * 1000 + frac;
	return 0;
}

long long
ot_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

long long
ot_now_ms(void)
{
	return ot_now_us() / 1000;
}

long
ot_backoff_ms(int attempt, long first_ms, long max_ms)
{
	long ms = first_ms;

	if (ms <= 0)
		return 0;
	for (; attempt > 0 && ms < max_ms; attempt--)
		ms *= 2;
	if (ms > max_ms)
		ms = max_ms;
	if (ms < 2)
		return ms;
	return ms / 2 + rand() % (ms / 2 + 1);
}
