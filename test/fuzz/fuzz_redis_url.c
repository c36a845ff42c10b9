/* Fuzzes the Redis URL parser (ot_redis_parse_url): OT_REDIS_URL and --redis reach it as typed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ot_redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ot_redis_url u;
	char err[512], *url;

	if (memchr(data, '\0', size)) /* a C string from the environment or argv has no NUL inside */
		return 0;
	if (!(url = malloc(size + 1)))
		return 0;
	memcpy(url, data, size);
	url[size] = '\0';
	err[0] = '\0';
	if (ot_redis_parse_url(url, &u, err, sizeof err)) {
		if (!err[0])
			abort();
	} else {
		/* Either a socket path or a host, each NUL-terminated within its field. */
		if (strnlen(u.host, sizeof u.host) == sizeof u.host ||
		    strnlen(u.path, sizeof u.path) == sizeof u.path ||
		    strnlen(u.password, sizeof u.password) == sizeof u.password)
			abort();
		if (!!u.path[0] == !!u.host[0] || (u.path[0] && u.path[0] != '/'))
			abort();
		if (u.port < 1 || u.port > 65535 || u.db < 0)
			abort();
	}
	free(url);
	return 0;
}
