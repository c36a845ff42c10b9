/* ot_replay: dead-lettered records sent back to the topic they came from. */
#ifndef OT_REPLAY_H
#define OT_REPLAY_H

#include <stddef.h>

struct ot_config;
struct ot_in;
struct ot_out;

struct ot_replay {
	long long since_ms, until_ms; /* dead-lettered in [since, until); 0 = unbounded */
	long max;                     /* stop after this many; 0 = all */
	int limit;                    /* refuse a record already replayed this many times */
	int dry_run;                  /* print the records, as JSON lines, instead */
};

struct ot_replay_stats {
	long read, replayed, filtered, refused, bad;
};

/* Opens what a replay reads: from (a dead-letter topic, or "-" for JSON lines) from its
 * beginning unless cfg's -o says otherwise, in a group of its own unless -G names one, up to
 * the end each partition has now, sending no dead letters of its own (cfg is changed to say
 * so). Returns the input, or NULL with *rc and errstr. */
struct ot_in *ot_replay_open(struct ot_config *cfg, const char *from, int *rc, char *errstr, size_t errsz);

/* Reads dead letters from in (a .dlq topic, or JSON lines as --dry-run or --meta print them)
 * and republishes each to its ot-dlq-topic with its key, value and original headers plus
 * ot-replay-count, or prints it when dry_run. Returns OT_OK, OT_EINPUT when a record was
 * refused or unusable, or the error that stopped it. */
int ot_replay_run(struct ot_in *in, struct ot_out *out, const struct ot_replay *o,
                  struct ot_replay_stats *st, char *errstr, size_t errsz);

/* The largest ot-replay-count accepted; a record is refused long before, at --limit. */
#define OT_REPLAY_COUNT_MAX 1000000

/* Parses an ot-replay-count header: plain decimal digits, 0 to OT_REPLAY_COUNT_MAX. Returns 0
 * with *n set, or -1 (s NULL, empty, signed, spaced or too large). */
int ot_replay_count_parse(const char *s, int *n);

/* Whether topic may receive replayed records: a legal Kafka topic name (1 to 249 of
 * [A-Za-z0-9._-], not "." or "..") that is not internal (Kafka's own, such as
 * __consumer_offsets, start with "__"). Returns 0 if it may, -1 with errstr if not. */
int ot_replay_target_check(const char *topic, char *errstr, size_t errsz);


#endif
