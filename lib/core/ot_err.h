/* ot_err: result codes shared by the library, and their exit statuses. */
#ifndef OT_ERR_H
#define OT_ERR_H

#include <stddef.h>

/* Library calls return one of these; the errstr buffer says why. */
enum ot_rc {
	OT_OK = 0,          /* done; a value above 0 is a record's outcome (ot_outcome.h) */
	OT_EINPUT = -1,     /* the record is bad: do not retry it */
	OT_ESERVICE = -2,   /* a service is unreachable or failed: retry later */
	OT_EINTERNAL = -3,  /* a bug or resource failure */
	OT_EOUTPUT = -4,    /* writing the output failed */
	OT_ECONFIG = -5,    /* configuration is invalid */
	OT_ECONFLICT = -6,  /* the record contradicts one already taken (a reused idempotency key) */
	OT_ENOTFOUND = -7,  /* the record names what does not exist (an unknown order): bad input */
	OT_ERACE = -8       /* a concurrent writer got there first: the same call again settles it */
};

/* 1 for an answer that refuses the record itself: it is not retried (a poison record). */
static inline int
ot_refused(int rc)
{
	return rc == OT_EINPUT || rc == OT_ENOTFOUND;
}

/* Maps an ot_rc to a <sysexits.h> status. */
int ot_exit_status(int rc);

/* snprintf into errstr if errstr is not NULL; returns rc so callers can `return ot_err(...)`. */
int ot_err(int rc, char *errstr, size_t errsz, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
