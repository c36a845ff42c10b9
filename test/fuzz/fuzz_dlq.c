/* Fuzzes the dead-letter reader of ot-relay replay (ot_replay_run, and through it the ot-dlq-*
 * header parsing and ot_time_ms): one record as --dry-run or --meta prints it. The first byte
 * picks the options: bit 0 --dry-run, bit 1 --since, bit 2 --until, the rest --limit. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ot_err.h"
#include "ot_io.h"
#include "ot_log.h"
#include "ot_config.h"
#include "ot_replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

/* Whether a replay count header lets a record through: absent, or a count below the limit. */
static int
count_allows(const char *s, int limit)
{
	char *end;
	long v;

	if (!s)
		return 1;
	if (!*s || strspn(s, "0123456789") != strlen(s))
		return 0;
	v = strtol(s, &end, 10);
	return v < limit;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ot_replay o = {0, 0, 0, 3, 0};
	struct ot_replay_stats st;
	struct ot_config cfg;
	struct ot_in *in;
	struct ot_out *out;
	json_t *rec;
	char err[1024], *line;
	int rc;

	if (size < 1 || size > 65536)
		return 0;
	if (fd < 0) {
		ot_log_level = OT_LOG_ERROR + 1;
		if (!freopen("/dev/null", "w", stdout) || (fd = memfd_create("dlq", 0)) < 0)
			abort();
		snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	}
	o.dry_run = data[0] & 1;
	o.since_ms = data[0] & 2 ? 1764000000000LL : 0;
	o.until_ms = data[0] & 4 ? 1800000000000LL : 0;
	o.limit = (data[0] >> 3) + 1;
	/* One record: ot_in reads lines, and a newline in JSON is only ever whitespace. */
	if (!(line = malloc(size)))
		return 0;
	memcpy(line, data + 1, size - 1);
	for (size_t i = 0; i < size - 1; i++)
		if (line[i] == '\n' || line[i] == '\r')
			line[i] = ' ';
	if (ftruncate(fd, 0) || pwrite(fd, line, size - 1, 0) != (ssize_t)(size - 1))
		abort();
	ot_config_init(&cfg, "fuzz");
	if (!(in = ot_in_open(path, &cfg, NULL, err, sizeof err)) || !(out = ot_out_open("-", &cfg, NULL, err, sizeof err)))
		abort();
	rc = ot_replay_run(in, out, &o, &st, err, sizeof err);
	ot_in_free(in);
	ot_out_free(out);
	/* Every record read is accounted for once, and the result says whether any was refused. */
	if (rc != OT_OK && rc != OT_EINPUT)
		abort();
	if (st.read > 1 || st.read != st.replayed + st.filtered + st.refused + st.bad)
		abort();
	if ((rc == OT_EINPUT) != (st.refused + st.bad > 0))
		abort();
	/* A record goes back only with a usable replay count below the limit. */
	rec = json_loadb(line, size - 1, 0, NULL);
	if (st.replayed && !o.dry_run &&
	    !count_allows(json_string_value(json_object_get(json_object_get(rec, "headers"),
	                                                    "ot-replay-count")), o.limit))
		abort();
	json_decref(rec);
	free(line);
	return 0;
}
