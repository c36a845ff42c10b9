/* ot_tool: what every tool does once its options are read, whatever its job. */
#ifndef OT_TOOL_H
#define OT_TOOL_H

#include <stddef.h>

struct ot_config;

/* ot_config_finish (the environment, defaults, logging, metrics, tracing), then what the
 * config itself cannot check: a Redis URL that cannot work (its form, a CA file for rediss://
 * that does not load) is an error now, not a retry loop later. Returns 0, or -1 with errstr. */
int ot_tool_finish(struct ot_config *c, const char *default_http_addr, char *errstr, size_t errsz);
/* ot_tool_finish, then SIGINT and SIGTERM set ot_stop. On failure it says why on stderr
 * ("tool: why"), frees c and returns EX_CONFIG; else 0. default_http_addr: where a long run
 * listens unless told (NULL: nowhere). */
int ot_tool_start(struct ot_config *c, const char *default_http_addr);

#endif
