/* ot_redis: connections, the versioned compare-and-set of order:{id}, and publish. */
#ifndef OT_REDIS_H
#define OT_REDIS_H

#include <hiredis/hiredis.h>
#include <stdatomic.h>
#include <stddef.h>

#include "ot_status.h"

struct ot_redis_url {
	char host[256];
	int port;
	char path[256];     /* unix socket path, "" for TCP */
	int db;
	char user[128];     /* ACL user, "" for the default user */
	char password[128];
	int tls;            /* rediss:// */
	char cacert[256];   /* rediss://...?cacert=FILE: CA bundle to verify the server ("" = system's) */
};

/* Parses redis://[[user]:password@]host[:port][/db], rediss://... (TLS, optionally
 * ?cacert=FILE) or unix:///path[?db=N]. User and password may be percent-encoded; a userinfo
 * without ":" is a password, as redis-cli reads it. Returns 0 or -1 with errstr, which never
 * holds the password. */
int ot_redis_parse_url(const char *url, struct ot_redis_url *u, char *errstr, size_t errsz);
/* Whether this build can connect with TLS (hiredis_ssl was found at build time). */
int ot_redis_tls_available(void);
/* For rediss:// (u->tls): whether this build has TLS and the CA bundle (u->cacert, else the
 * system's) loads, which then serves every connection. Returns 0 (always for redis:// and
 * unix://) or -1 with errstr: a configuration error. */
int ot_redis_tls_check(const struct ot_redis_url *u, char *errstr, size_t errsz);
/* Connects (over TLS for rediss://), authenticates (AUTH user password for an ACL user) and
 * selects the db. Returns NULL with errstr; caller redisFree's. */
redisContext *ot_redis_connect(const char *url, int timeout_ms, char *errstr, size_t errsz);

/* A Lua script Redis runs by its SHA-1 (EVALSHA), so a call sends the digest, not the source:
 * loaded into Redis's script cache on first use and again whenever Redis lost it (NOSCRIPT
 * after a restart or SCRIPT FLUSH). Define one, static, with OT_REDIS_SCRIPT(source); the
 * digest is computed on first use. */
struct ot_redis_script {
	const char *src;
	char sha[41];
	atomic_int ready;
};
#define OT_REDIS_SCRIPT(source) {(source), "", 0}

/* The SHA-1 of s's source in hex, as EVALSHA names it (computed on the first call). */
const char *ot_redis_script_sha(struct ot_redis_script *s);
/* Runs s with argv[0..argc): numkeys, the keys, the arguments (argvlen NULL: C strings).
 * EVALSHA first; on NOSCRIPT the source (EVAL), which loads it for the next call. Returns the
 * reply, which may be an error reply (caller freeReplyObject's), or NULL when the connection
 * broke (r->errstr says why). */
redisReply *ot_redis_evalsha(redisContext *r, struct ot_redis_script *s, int argc, const char **argv,
                             const size_t *argvlen);
/* Appends EVALSHA s argv... to r's output buffer, for a pipeline: its reply comes with
 * redisGetReply; when that is NOSCRIPT (ot_redis_noscript), run it again with
 * ot_redis_evalsha. Returns REDIS_OK or REDIS_ERR (out of memory). */
int ot_redis_append_evalsha(redisContext *r, struct ot_redis_script *s, int argc, const char **argv,
                            const size_t *argvlen);
/* 1 when rep is Redis's NOSCRIPT error: the script is not (any more) in its cache. */
int ot_redis_noscript(const redisReply *rep);


/* The keys of one order: order:{ID} its status (a hash) and orderlog:{ID} its recent changes,
 * hash-tagged so both sit in one Redis Cluster slot; each change is also published on the
 * channel order:{ID}. */
#define OT_REDIS_KEY_FMT "order:{%s}"
#define OT_REDIS_LOG_FMT "orderlog:{%s}"
/* The single-flight refill lock, and the negative entry "none" (ot_cache_refill). */
#define OT_REDIS_LOCK_FMT "lock:order:{%s}"
/* The order id in a key or channel named order:{ID}, NUL-terminated in id (64 bytes). Returns 1,
 * or 0 when name is not one. */
int ot_redis_order_of(const char *name, char id[64]);

/* The rate limiter's key of one client (GCRA). */
#define OT_REDIS_RL_FMT "rl:%s"

/* How many changes orderlog:{id} keeps for streams that resume. */
#define OT_REDIS_LOG_MAX 50
#define OT_REDIS_LOG_MAX_S "50"

/* Writes st into order:{id} only if st->version is newer than the cached one (Lua CAS), sets
 * the TTL for its state, records the change in orderlog:{id} (a sorted set by version, the
 * last OT_REDIS_LOG_MAX kept) and PUBLISHes order:{id} with the status JSON. Returns 1 written, 0 stale (kept the newer),
 * or OT_ESERVICE with errstr. */
int ot_redis_put_status(redisContext *r, const struct ot_status *st, char *errstr, size_t errsz);
/* ot_redis_put_status for n statuses in one pipeline (one EVALSHA each, in order, then the n
 * replies): results[i] is 1 written or 0 stale, as ot_redis_put_status returns. Returns 0, or
 * OT_ESERVICE with errstr when the connection broke or a reply was an error: the caller then
 * treats all n as failed (the CAS makes writing them again safe). */
int ot_redis_put_many(redisContext *r, const struct ot_status *sts, size_t n, int *results, char *errstr,
                      size_t errsz);
/* The same, for a replayed change (ot-cache rebuild and sync): writes only where Redis knows the
 * order (its entry or its change log exists). Returns 2 when it does not: the caller takes the
 * status from the database instead, since an old change written into a cache that lost its
 * data would show a status older than one already served. */
int ot_redis_put_known(redisContext *r, const struct ot_status *st, char *errstr, size_t errsz);
/* Returns 1 with st filled, 0 on a miss, OT_ESERVICE with errstr. */
int ot_redis_get_status(redisContext *r, const char *order_id, struct ot_status *st,
                        char *errstr, size_t errsz);
/* The same read in two halves, for a pipeline: the command into *cmd (its length returned,
 * -1 when out of memory; caller frees *cmd), then its reply into st: 1 found, 0 a miss, -1
 * not an answer (NULL or an error reply). */
int ot_redis_status_cmd(char **cmd, const char *order_id);
int ot_redis_status_of(const redisReply *rep, const char *order_id, struct ot_status *st);
/* Deletes order:{id}. Returns 1 deleted, 0 absent, OT_ESERVICE. */
int ot_redis_del_status(redisContext *r, const char *order_id, char *errstr, size_t errsz);
/* PING. Returns 0 or OT_ESERVICE. */
int ot_redis_ping(redisContext *r, char *errstr, size_t errsz);
/* The changes of one order newer than version after, oldest first: an array reply of member
 * (the status JSON) and score (the version) pairs; caller freeReplyObject's. NULL with errstr. */
redisReply *ot_redis_history(redisContext *r, const char *order_id, long long after,
                             char *errstr, size_t errsz);
/* Rate limit (GCRA, in Lua, on Redis's clock): may client make take more requests (at least
 * one) at per_s a second with bursts of burst? With take > 0 they count when all may; with 0
 * nothing is counted (a look at one). Returns 1 yes, 0 no (with *wait_ms until it may),
 * OT_ESERVICE. */
int ot_redis_gcra(redisContext *r, const char *client, double per_s, int burst, int take, long *wait_ms,
                  char *errstr, size_t errsz);
/* The same check in two halves, for a pipeline: the command into *cmd (EVALSHA, or with
 * source 1 EVAL, which sends the script and loads it: after a NOSCRIPT reply), its length
 * returned, -1 when out of memory; caller frees *cmd. Then its reply: 1 yes, 0 no (with
 * *wait_ms), -1 not an answer (NULL, or an error reply such as NOSCRIPT). */
int ot_redis_gcra_cmd(char **cmd, const char *client, double per_s, int burst, int take, int source);
int ot_redis_gcra_of(const redisReply *rep, long *wait_ms);

#endif
