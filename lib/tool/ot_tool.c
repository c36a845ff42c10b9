/* ot_tool: what every tool does once its options are read, whatever its job. */
#include <stdio.h>
#include <sysexits.h>

#include "ot_config.h"
#include "ot_redis.h"
#include "ot_signal.h"
#include "ot_tool.h"

int
ot_tool_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz)
{
	struct ot_redis_url ru;

	if (ot_config_finish(c, default_http_addr, errstr, errsz) ||
	    ot_redis_parse_url(c->redis_url, &ru, errstr, errsz) || ot_redis_tls_check(&ru, errstr, errsz))
		return -1;
	return 0;
}

int
ot_tool_start(struct ot_config *c, const char *default_http_addr)
{
	char err[1024];

	if (ot_tool_finish(c, default_http_addr, err, sizeof err)) {
		fprintf(stderr, "%s: %s\n", c->tool, err);
		ot_config_free(c);
		return EX_CONFIG;
	}
	ot_signal_install();
	return 0;
}
