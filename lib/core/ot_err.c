/* ot_err: result codes and their exit statuses. */
#include <stdarg.h>
#include <stdio.h>
#include <sysexits.h>

#include "ot_err.h"
#include "ot_text.h"

int
ot_exit_status(int rc)
{
	if (rc >= 0) /* done, or an outcome that changed nothing */
		return EX_OK;
	switch (rc) {
	case OT_EINPUT: case OT_ECONFLICT: case OT_ENOTFOUND: return EX_DATAERR;
	case OT_ESERVICE: return EX_UNAVAILABLE;
	case OT_ERACE: return EX_TEMPFAIL;
	case OT_EOUTPUT: return EX_IOERR;
	case OT_ECONFIG: return EX_CONFIG;
	default: return EX_SOFTWARE;
	}
}

int
ot_err(int rc, char *errstr, size_t errsz, const char *fmt, ...)
{
	va_list ap;

	if (errstr && errsz) {
		va_start(ap, fmt);
		if (vsnprintf(errstr, errsz, fmt, ap) >= (int)errsz) /* cut: on a character boundary */
			errstr[ot_utf8_cut(errstr, errsz - 1)] = '\0';
		va_end(ap);
	}
	return rc;
}
