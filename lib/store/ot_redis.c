/* ot_redis: Redis connections and the versioned compare-and-set of order:{id}. */
#include <errno.h>
#include <limits.h>
#include <nettle/sha1.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "ot_err.h"
#include "ot_event.h"
#include "ot_log.h"
#include "ot_redis.h"
#include "ot_state.h"
#include "ot_text.h"

#ifdef OT_HAVE_HIREDIS_SSL
#include <arpa/inet.h>
#include <hiredis/hiredis_ssl.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <unistd.h>
#endif

/* Seconds an order stays cached: short while it moves, longer once it is settled. */
#define TTL_ACTIVE 3600
#define TTL_TERMINAL (7 * 86400)

/* KEYS[1] order:{id}, KEYS[2] orderlog:{id}, KEYS[3] lock:order:{id}; ARGV: version status
 * updated_at lat lon eta ttl message known-only payment (its JSON, "" none). Writes only a newer version, so late or repeated events never move a status
 * backwards. orderlog keeps the last changes (by version) for streams that resume, and its
 * newest version is a floor that outlives order:{id}: a refill that read the database just
 * before a newer write cannot put the older status back after the entry was invalidated or
 * expired in between. known-only "1" writes nothing (returns 2) for an order Redis knows
 * nothing of. A write deletes the order's negative entry ("none" in KEYS[3]), never a refill's
 * lock. */
static const char cas_src[] =
	"local cur = redis.call('HGET', KEYS[1], 'version')\n"
	"if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end\n"
	"local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')\n"
	"if top[2] and tonumber(top[2]) > tonumber(ARGV[1]) then return 0 end\n"
	"if ARGV[9] == '1' and not cur and not top[2] then return 2 end\n"
	"redis.call('DEL', KEYS[1])\n"
	"if redis.call('GET', KEYS[3]) == 'none' then redis.call('DEL', KEYS[3]) end\n"
	"redis.call('HSET', KEYS[1], 'version', ARGV[1], 'status', ARGV[2], 'updated_at', ARGV[3])\n"
	"if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'lat', ARGV[4], 'lon', ARGV[5]) end\n"
	"if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'eta', ARGV[6]) end\n"
	"if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'payment', ARGV[10]) end\n"
	"redis.call('EXPIRE', KEYS[1], ARGV[7])\n"
	"redis.call('ZREMRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[1])\n"
	"redis.call('ZADD', KEYS[2], ARGV[1], ARGV[8])\n"
	"redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -" OT_REDIS_LOG_MAX_S "-1)\n"
	"redis.call('EXPIRE', KEYS[2], ARGV[7])\n"
	"redis.call('PUBLISH', KEYS[1], ARGV[8])\n"
	"return 1\n";

/* GCRA. KEYS[1] rl:{client}; ARGV: emission interval (ms per request), tolerance (ms: the
 * burst), take (n > 0 counts n requests at once if all n may pass; "0" only asks whether one
 * more would). Returns {1, 0} allowed or {0, ms to wait}. The clock is Redis's, so every
 * server shares one. */
static const char gcra_src[] =
	"local t = redis.call('TIME')\n"
	"local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
	"local tat = tonumber(redis.call('GET', KEYS[1]) or now)\n"
	"if tat < now then tat = now end\n"
	"local n = tonumber(ARGV[3])\n"
	"local new = tat + tonumber(ARGV[1]) * math.max(n, 1)\n"
	"local wait = new - tonumber(ARGV[2]) - now\n"
	"if wait > 0 then return {0, math.ceil(wait)} end\n"
	"if n > 0 then redis.call('SET', KEYS[1], new, 'PX', math.max(1, math.ceil(new - now))) end\n"
	"return {1, 0}\n";

static struct ot_redis_script cas_script = OT_REDIS_SCRIPT(cas_src);
static struct ot_redis_script gcra_script = OT_REDIS_SCRIPT(gcra_src);

static int
hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
	     : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes src[0..len) into dst. Returns 0, or -1 for a bad escape or no room. */
static int
pct_decode(char *dst, size_t size, const char *src, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (n + 1 >= size)
			return -1;
		if (src[i] != '%') {
			dst[n++] = src[i];
			continue;
		}
		if (i + 2 >= len || hexval(src[i + 1]) < 0 || hexval(src[i + 2]) < 0)
			return -1;
		dst[n++] = (char)(hexval(src[i + 1]) * 16 + hexval(src[i + 2]));
		i += 2;
	}
	dst[n] = '\0';
	return 0;
}

/* A db number: digits only, within an int (a larger one used to wrap to another db). */
static int
db_number(const char *s, const char *end_at, int *db)
{
	long v;
	char *end;

	if (s == end_at || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end != end_at || v < 0 || v > INT_MAX)
		return -1;
	*db = (int)v;
	return 0;
}

int
ot_redis_parse_url(const char *url, struct ot_redis_url *u, char *errstr, size_t errsz)
{
	const char *p, *at, *slash, *colon, *q, *end_auth;
	char *end, shown[600];
	long v;

	memset(u, 0, sizeof *u);
	u->port = 6379;
	if (!url || !*url)
		return ot_err(-1, errstr, errsz, "empty Redis URL");
	ot_redact(url, shown, sizeof shown); /* what the messages below quote */
	if (!strncmp(url, "unix://", 7)) {
		p = url + 7;
		q = strchr(p, '?');
		if ((q ? (size_t)(q - p) : strlen(p)) >= sizeof u->path || *p != '/')
			return ot_err(-1, errstr, errsz, "Redis URL %s: expected unix:///path/to/socket", shown);
		snprintf(u->path, sizeof u->path, "%.*s", (int)(q ? q - p : (long)strlen(p)), p);
		if (q && (strncmp(q, "?db=", 4) || db_number(q + 4, q + strlen(q), &u->db)))
			return ot_err(-1, errstr, errsz, "Redis URL %s: bad db number", shown);
		return 0;
	}
	if (!strncmp(url, "rediss://", 9)) {
		u->tls = 1;
		p = url + 9;
	} else if (!strncmp(url, "redis://", 8)) {
		p = url + 8;
	} else {
		return ot_err(-1, errstr, errsz, "Redis URL %s: expected redis://host:port/db, "
		              "rediss://host:port/db or unix:///path", shown);
	}
	/* The userinfo ends at the last @ before the path: a password may hold an encoded @. */
	end_auth = p + strcspn(p, "/?");
	for (at = end_auth; at > p && at[-1] != '@'; at--)
		;
	if (at > p) {
		at--; /* at the @ */
		colon = memchr(p, ':', (size_t)(at - p));
		if (colon && pct_decode(u->user, sizeof u->user, p, (size_t)(colon - p)))
			return ot_err(-1, errstr, errsz, "Redis URL %s: bad or too long user", shown);
		q = colon ? colon + 1 : p;
		if (pct_decode(u->password, sizeof u->password, q, (size_t)(at - q)))
			return ot_err(-1, errstr, errsz, "Redis URL %s: bad or too long password", shown);
		p = at + 1;
	}
	slash = p + strcspn(p, "/?");
	if (*p == '[') { /* an IPv6 address: [::1]:6379 */
		const char *rb = memchr(p, ']', (size_t)(slash - p));
		size_t hl = rb ? (size_t)(rb - p - 1) : 0;

		if (!rb || hl == 0 || hl >= sizeof u->host || (rb[1] != ':' && rb + 1 != slash))
			return ot_err(-1, errstr, errsz, "Redis URL %s: bad [IPv6] host", shown);
		snprintf(u->host, sizeof u->host, "%.*s", (int)hl, p + 1);
		colon = rb[1] == ':' ? rb + 1 : NULL;
	} else {
		size_t hl;

		colon = memchr(p, ':', (size_t)(slash - p));
		hl = (size_t)((colon ? colon : slash) - p);
		if (hl == 0 || hl >= sizeof u->host)
			return ot_err(-1, errstr, errsz, "Redis URL %s: missing or too long host", shown);
		snprintf(u->host, sizeof u->host, "%.*s", (int)hl, p);
	}
	if (colon) {
		v = strtol(colon + 1, &end, 10);
		if (end == colon + 1 || end != slash || v < 1 || v > 65535)
			return ot_err(-1, errstr, errsz, "Redis URL %s: bad port", shown);
		u->port = (int)v;
	}
	q = strchr(slash, '?');
	if (*slash == '/' && slash + 1 != (q ? q : slash + strlen(slash)) &&
	    db_number(slash + 1, q ? q : slash + strlen(slash), &u->db))
		return ot_err(-1, errstr, errsz, "Redis URL %s: bad db number", shown);
	if (q) {
		if (!u->tls || strncmp(q, "?cacert=", 8) || !q[8] || strlen(q + 8) >= sizeof u->cacert ||
		    strchr(q + 8, '&'))
			return ot_err(-1, errstr, errsz, "Redis URL %s: the only parameter is ?cacert=FILE, "
			              "with rediss://", shown);
		snprintf(u->cacert, sizeof u->cacert, "%s", q + 8);
	}
	return 0;
}

int
ot_redis_tls_available(void)
{
#ifdef OT_HAVE_HIREDIS_SSL
	return 1;
#else
	return 0;
#endif
}

#ifdef OT_HAVE_HIREDIS_SSL
/* One TLS context for the process, made at the first check or connection: the CA bundle is
 * read once, and every connection (a thread's, a cluster node's) shares it. */
static pthread_mutex_t tls_mu = PTHREAD_MUTEX_INITIALIZER;
static SSL_CTX *tls_ctx;
static char tls_ca[sizeof ((struct ot_redis_url *)0)->cacert];

/* A reference to the context that verifies servers against cacert ("" = the system's CAs), or
 * NULL with errstr when cacert cannot be read or holds no certificate. Caller SSL_CTX_free's. */
static SSL_CTX *
tls_context(const char *cacert, char *errstr, size_t errsz)
{
	SSL_CTX *ctx = NULL;
	unsigned long e;

	pthread_mutex_lock(&tls_mu);
	if (tls_ctx && !strcmp(tls_ca, cacert)) {
		ctx = tls_ctx;
		goto out;
	}
	if (cacert[0] && access(cacert, R_OK)) {
		ot_err(-1, errstr, errsz, "Redis TLS: cacert %s: %s", cacert, strerror(errno));
		goto out;
	}
	ERR_clear_error();
	if (!(ctx = SSL_CTX_new(TLS_client_method())) || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		goto failed;
	if (cacert[0] ? !SSL_CTX_load_verify_locations(ctx, cacert, NULL)
	              : !SSL_CTX_set_default_verify_paths(ctx) ||
	                !SSL_CTX_load_verify_locations(ctx, NULL, "/etc/ssl/certs"))
		goto failed;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_free(tls_ctx);
	tls_ctx = ctx;
	snprintf(tls_ca, sizeof tls_ca, "%s", cacert);
	goto out;
failed:
	e = ERR_peek_last_error();
	ot_err(-1, errstr, errsz, "Redis TLS: CA %s: %s", cacert[0] ? cacert : "/etc/ssl/certs",
	       e ? ERR_reason_error_string(e) : "cannot be loaded");
	ERR_clear_error();
	SSL_CTX_free(ctx);
	ctx = NULL;
out:
	if (ctx)
		SSL_CTX_up_ref(ctx);
	pthread_mutex_unlock(&tls_mu);
	return ctx;
}

/* Starts TLS on r: the server's certificate must chain to u->cacert (or the system's CAs) and
 * name u->host, a DNS name or an IP address, as HTTPS clients check it. */
static int
start_tls(redisContext *r, const struct ot_redis_url *u, const char *shown, char *errstr, size_t errsz)
{
	SSL_CTX *ctx = tls_context(u->cacert, errstr, errsz);
	unsigned char ip[16];
	SSL *ssl;
	long v;
	int ok;

	if (!ctx)
		return OT_ECONFIG;
	ssl = SSL_new(ctx);
	SSL_CTX_free(ctx); /* the SSL holds its own reference */
	if (!ssl)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis TLS for %s: out of memory", shown);
	if (inet_pton(AF_INET, u->host, ip) == 1 || inet_pton(AF_INET6, u->host, ip) == 1)
		ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), u->host);
	else
		ok = SSL_set_tlsext_host_name(ssl, u->host) && SSL_set1_host(ssl, u->host);
	if (!ok) {
		SSL_free(ssl);
		return ot_err(OT_ECONFIG, errstr, errsz, "Redis TLS for %s: bad host name", shown);
	}
	/* hiredis owns ssl once the handshake succeeded, and not before. */
	if (redisInitiateSSL(r, ssl) != REDIS_OK) {
		v = SSL_get_verify_result(ssl);
		ot_err(OT_ESERVICE, errstr, errsz, "Redis TLS handshake with %s: %s%s%s", shown, r->errstr,
		       v != X509_V_OK ? ": " : "", v != X509_V_OK ? X509_verify_cert_error_string(v) : "");
		SSL_free(ssl);
		ERR_clear_error();
		return OT_ESERVICE;
	}
	return 0;
}
#endif

int
ot_redis_tls_check(const struct ot_redis_url *u, char *errstr, size_t errsz)
{
#ifdef OT_HAVE_HIREDIS_SSL
	SSL_CTX *ctx;

	if (!u->tls)
		return 0;
	if (!(ctx = tls_context(u->cacert, errstr, errsz)))
		return -1;
	SSL_CTX_free(ctx);
	return 0;
#else
	if (!u->tls)
		return 0;
	return ot_err(-1, errstr, errsz, "Redis URL rediss://%s:%d: this build has no TLS "
	              "(hiredis_ssl was not found when it was built)", u->host, u->port);
#endif
}

redisContext *
ot_redis_connect(const char *url, int timeout_ms, char *errstr, size_t errsz)
{
	struct ot_redis_url u;
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	redisContext *r;
	redisReply *rep;
	char shown[600];

	if (ot_redis_parse_url(url, &u, errstr, errsz))
		return NULL;
	ot_redact(url, shown, sizeof shown); /* what the messages below quote */
	if (u.tls && !ot_redis_tls_available()) {
		ot_err(OT_ECONFIG, errstr, errsz, "Redis URL %s: this build has no TLS (hiredis_ssl was "
		       "not found when it was built)", shown);
		return NULL;
	}
	r = u.path[0] ? redisConnectUnixWithTimeout(u.path, tv) : redisConnectWithTimeout(u.host, u.port, tv);
	if (!r || r->err) {
		ot_err(OT_ESERVICE, errstr, errsz, "cannot connect to Redis at %s: %s", shown,
		       r ? r->errstr : "out of memory");
		redisFree(r);
		return NULL;
	}
	redisSetTimeout(r, tv);
#ifdef OT_HAVE_HIREDIS_SSL
	if (u.tls && start_tls(r, &u, shown, errstr, errsz)) {
		redisFree(r);
		return NULL;
	}
#endif
	if (u.password[0] || u.user[0]) {
		rep = u.user[0] ? redisCommand(r, "AUTH %s %s", u.user, u.password)
		                : redisCommand(r, "AUTH %s", u.password);
		if (!rep || rep->type == REDIS_REPLY_ERROR) {
			ot_err(OT_ESERVICE, errstr, errsz, "Redis AUTH failed at %s: %s", shown,
			       rep ? rep->str : r->errstr);
			freeReplyObject(rep);
			redisFree(r);
			return NULL;
		}
		freeReplyObject(rep);
	}
	if (u.db) {
		rep = redisCommand(r, "SELECT %d", u.db);
		if (!rep || rep->type == REDIS_REPLY_ERROR) {
			ot_err(OT_ESERVICE, errstr, errsz, "Redis SELECT %d failed at %s", u.db, shown);
			freeReplyObject(rep);
			redisFree(r);
			return NULL;
		}
		freeReplyObject(rep);
	}
	return r;
}

int
ot_redis_order_of(const char *name, char id[64])
{
	size_t n;

	if (strncmp(name, "order:{", 7))
		return 0;
	name += 7;
	n = strlen(name);
	if (n < 2 || n > 64 || name[n - 1] != '}' || memchr(name, '}', n - 1))
		return 0;
	memcpy(id, name, n - 1);
	id[n - 1] = '\0';
	return 1;
}

const char *
ot_redis_script_sha(struct ot_redis_script *s)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	struct sha1_ctx ctx;
	uint8_t d[SHA1_DIGEST_SIZE];

	if (atomic_load_explicit(&s->ready, memory_order_acquire))
		return s->sha;
	pthread_mutex_lock(&mu);
	if (!atomic_load_explicit(&s->ready, memory_order_relaxed)) {
		sha1_init(&ctx);
		sha1_update(&ctx, strlen(s->src), (const uint8_t *)s->src);
		sha1_digest(&ctx, sizeof d, d);
		for (int i = 0; i < SHA1_DIGEST_SIZE; i++)
			snprintf(s->sha + 2 * i, 3, "%02x", d[i]);
		atomic_store_explicit(&s->ready, 1, memory_order_release);
	}
	pthread_mutex_unlock(&mu);
	return s->sha;
}

/* Sends (send) or appends (!send) cmd, then the script's digest or source, then argv. */
static void *
script_command(redisContext *r, const char *cmd, const char *script, int argc, const char **argv,
               const size_t *argvlen, int send, int *rc)
{
	const char *av[32];
	size_t al[32];
	void *rep = NULL;

	*rc = REDIS_ERR;
	if (argc < 0 || argc > 30)
		return NULL;
	av[0] = cmd, al[0] = strlen(cmd);
	av[1] = script, al[1] = strlen(script);
	for (int i = 0; i < argc; i++) {
		av[2 + i] = argv[i];
		al[2 + i] = argvlen ? argvlen[i] : strlen(argv[i]);
	}
	if (send)
		rep = redisCommandArgv(r, argc + 2, av, al);
	else
		*rc = redisAppendCommandArgv(r, argc + 2, av, al);
	return rep;
}

int
ot_redis_noscript(const redisReply *rep)
{
	return rep && rep->type == REDIS_REPLY_ERROR && rep->str && !strncmp(rep->str, "NOSCRIPT", 8);
}

redisReply *
ot_redis_evalsha(redisContext *r, struct ot_redis_script *s, int argc, const char **argv, const size_t *argvlen)
{
	redisReply *rep;
	int rc;

	rep = script_command(r, "EVALSHA", ot_redis_script_sha(s), argc, argv, argvlen, 1, &rc);
	if (!ot_redis_noscript(rep))
		return rep;
	freeReplyObject(rep);
	return script_command(r, "EVAL", s->src, argc, argv, argvlen, 1, &rc);
}

int
ot_redis_append_evalsha(redisContext *r, struct ot_redis_script *s, int argc, const char **argv,
                        const size_t *argvlen)
{
	int rc;

	script_command(r, "EVALSHA", ot_redis_script_sha(s), argc, argv, argvlen, 0, &rc);
	return rc;
}

static int
reply_error(redisContext *r, redisReply *rep, const char *what, char *errstr, size_t errsz)
{
	ot_err(OT_ESERVICE, errstr, errsz, "Redis %s: %s", what,
	       rep && rep->type == REDIS_REPLY_ERROR ? rep->str : r->err ? r->errstr : "no reply");
	freeReplyObject(rep);
	return OT_ESERVICE;
}

/* The TTL for the entry's state, plus up to 10% spread by order id, so that entries written
 * together do not all expire (and miss) together. */
static int
ttl_of(const struct ot_status *st)
{
	int base = ot_state_terminal(ot_state_parse(st->status)) ? TTL_TERMINAL : TTL_ACTIVE;

	return base + (int)(ot_hash32(st->order_id) % (unsigned)(base / 10));
}

/* The arguments of one CAS write, after the script: numkeys, keys and values. */
#define CAS_ARGC 14
struct cas_args {
	char key[80], logkey[80], lockkey[80], ver[24], lat[32], lon[32], ttl[16];
	char pay[256];       /* the payment's JSON, "" none */
	char *msg;           /* the status JSON: free it */
	const char *argv[CAS_ARGC];
};

static void
cas_args(struct cas_args *a, const struct ot_status *st, int known_only)
{
	json_t *o;

	snprintf(a->key, sizeof a->key, OT_REDIS_KEY_FMT, st->order_id);
	snprintf(a->logkey, sizeof a->logkey, OT_REDIS_LOG_FMT, st->order_id);
	snprintf(a->lockkey, sizeof a->lockkey, OT_REDIS_LOCK_FMT, st->order_id);
	snprintf(a->ver, sizeof a->ver, "%lld", st->version);
	a->lat[0] = a->lon[0] = '\0';
	if (st->has_pos) {
		snprintf(a->lat, sizeof a->lat, "%.6f", st->lat);
		snprintf(a->lon, sizeof a->lon, "%.6f", st->lon);
	}
	snprintf(a->ttl, sizeof a->ttl, "%d", ttl_of(st));
	a->pay[0] = '\0';
	if ((o = ot_payment_to_json(&st->pay))) {
		size_t n = json_dumpb(o, a->pay, sizeof a->pay - 1, JSON_COMPACT);
		a->pay[n < sizeof a->pay ? n : 0] = '\0';
		json_decref(o);
	}
	o = ot_status_to_json(st);
	a->msg = json_dumps(o, OT_JSON_FLAGS);
	json_decref(o);
	a->argv[0] = "3"; a->argv[1] = a->key; a->argv[2] = a->logkey; a->argv[3] = a->lockkey;
	a->argv[4] = a->ver; a->argv[5] = st->status; a->argv[6] = st->updated_at; a->argv[7] = a->lat;
	a->argv[8] = a->lon; a->argv[9] = st->eta; a->argv[10] = a->ttl; a->argv[11] = a->msg ? a->msg : "{}";
	a->argv[12] = known_only ? "1" : "0";
	a->argv[13] = a->pay;
}

/* The CAS script's answer: 1 written, 2 unknown (known-only), 0 stale; -1 not an answer. */
static int
cas_result(const redisReply *rep)
{
	if (!rep || rep->type != REDIS_REPLY_INTEGER)
		return -1;
	return rep->integer == 1 || rep->integer == 2 ? (int)rep->integer : 0;
}

static int
put_status(redisContext *r, const struct ot_status *st, int known_only, char *errstr, size_t errsz)
{
	struct cas_args a;
	redisReply *rep;
	int rc;

	if (r->err)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
	cas_args(&a, st, known_only);
	rep = ot_redis_evalsha(r, &cas_script, CAS_ARGC, a.argv, NULL);
	free(a.msg);
	if ((rc = cas_result(rep)) < 0)
		return reply_error(r, rep, "CAS write", errstr, errsz);
	freeReplyObject(rep);
	return rc;
}

int
ot_redis_put_many(redisContext *r, const struct ot_status *sts, size_t n, int *results, char *errstr,
                  size_t errsz)
{
	struct cas_args a;
	redisReply *rep;
	size_t i, sent;
	void *v;
	int rc = 0, appended;

	if (r->err)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
	for (sent = 0; sent < n; sent++) {
		cas_args(&a, &sts[sent], 0);
		appended = ot_redis_append_evalsha(r, &cas_script, CAS_ARGC, a.argv, NULL);
		free(a.msg);
		if (appended != REDIS_OK)
			break;
	}
	/* Every appended command is answered, even after a failure, so the connection stays in step. */
	for (i = 0; i < sent; i++) {
		if (redisGetReply(r, &v) != REDIS_OK)
			return ot_err(OT_ESERVICE, errstr, errsz, "Redis CAS write: %s", r->errstr);
		rep = v;
		/* Redis lost the script: run again below, once every reply of the pipeline is read. */
		results[i] = ot_redis_noscript(rep) ? 3 : cas_result(rep);
		if (results[i] < 0 && !rc)
			rc = ot_err(OT_ESERVICE, errstr, errsz, "Redis CAS write: %s",
			            rep && rep->type == REDIS_REPLY_ERROR ? rep->str : "no reply");
		freeReplyObject(rep);
	}
	/* In order, the first loading the script; a CAS never lets a write go back a version. */
	for (i = 0; i < sent && !rc; i++) {
		if (results[i] != 3)
			continue;
		cas_args(&a, &sts[i], 0);
		rep = ot_redis_evalsha(r, &cas_script, CAS_ARGC, a.argv, NULL);
		free(a.msg);
		if ((results[i] = cas_result(rep)) < 0)
			rc = reply_error(r, rep, "CAS write", errstr, errsz);
		else
			freeReplyObject(rep);
	}
	if (sent < n)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis CAS write: out of memory");
	return rc ? OT_ESERVICE : 0;
}

int
ot_redis_put_status(redisContext *r, const struct ot_status *st, char *errstr, size_t errsz)
{
	return put_status(r, st, 0, errstr, errsz);
}

int
ot_redis_put_known(redisContext *r, const struct ot_status *st, char *errstr, size_t errsz)
{
	return put_status(r, st, 1, errstr, errsz);
}

int
ot_redis_status_cmd(char **cmd, const char *order_id)
{
	return redisFormatCommand(cmd, "HGETALL " OT_REDIS_KEY_FMT, order_id);
}

/* The payment field of order:{id}, its JSON. */
static void
status_payment(struct ot_status *st, const char *v)
{
	json_t *o = json_loads(v, 0, NULL);

	ot_payment_from_json(o, &st->pay);
	json_decref(o);
}

int
ot_redis_status_of(const redisReply *rep, const char *order_id, struct ot_status *st)
{
	size_t i;

	if (!rep || rep->type != REDIS_REPLY_ARRAY)
		return -1;
	memset(st, 0, sizeof *st);
	snprintf(st->order_id, sizeof st->order_id, "%s", order_id);
	for (i = 0; i + 1 < rep->elements; i += 2) {
		const char *k = rep->element[i]->str, *v = rep->element[i + 1]->str;
		if (!k || !v)
			continue;
		if (!strcmp(k, "status"))
			snprintf(st->status, sizeof st->status, "%s", v);
		else if (!strcmp(k, "version"))
			st->version = strtoll(v, NULL, 10);
		else if (!strcmp(k, "lat"))
			st->lat = strtod(v, NULL), st->has_pos = 1;
		else if (!strcmp(k, "lon"))
			st->lon = strtod(v, NULL);
		else if (!strcmp(k, "eta"))
			snprintf(st->eta, sizeof st->eta, "%s", v);
		else if (!strcmp(k, "updated_at"))
			snprintf(st->updated_at, sizeof st->updated_at, "%s", v);
		else if (!strcmp(k, "payment"))
			status_payment(st, v);
	}
	return rep->elements > 0 && st->status[0] ? 1 : 0;
}

int
ot_redis_get_status(redisContext *r, const char *order_id, struct ot_status *st,
                    char *errstr, size_t errsz)
{
	redisReply *rep;
	int rc;

	if (r->err)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
	rep = redisCommand(r, "HGETALL " OT_REDIS_KEY_FMT, order_id);
	if ((rc = ot_redis_status_of(rep, order_id, st)) < 0)
		return reply_error(r, rep, "HGETALL", errstr, errsz);
	freeReplyObject(rep);
	return rc;
}

int
ot_redis_del_status(redisContext *r, const char *order_id, char *errstr, size_t errsz)
{
	redisReply *rep;
	int rc;

	rep = redisCommand(r, "DEL " OT_REDIS_KEY_FMT, order_id);
	if (!rep || rep->type != REDIS_REPLY_INTEGER)
		return reply_error(r, rep, "DEL", errstr, errsz);
	rc = rep->integer > 0;
	freeReplyObject(rep);
	return rc;
}

int
ot_redis_ping(redisContext *r, char *errstr, size_t errsz)
{
	redisReply *rep;

	if (r->err)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
	rep = redisCommand(r, "PING");
	if (!rep || rep->type == REDIS_REPLY_ERROR)
		return reply_error(r, rep, "PING", errstr, errsz);
	freeReplyObject(rep);
	return 0;
}

redisReply *
ot_redis_history(redisContext *r, const char *order_id, long long after, char *errstr, size_t errsz)
{
	redisReply *rep;

	if (r->err) {
		ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
		return NULL;
	}
	rep = redisCommand(r, "ZRANGEBYSCORE " OT_REDIS_LOG_FMT " (%lld +inf WITHSCORES", order_id, after);
	if (!rep || rep->type != REDIS_REPLY_ARRAY) {
		reply_error(r, rep, "ZRANGEBYSCORE", errstr, errsz);
		return NULL;
	}
	return rep;
}

/* The GCRA script's arguments after it: numkeys, the key, interval, tolerance, take. */
struct gcra_args {
	char key[160], iv[32], tol[48], n[16];
	const char *argv[5];
};

static void
gcra_args(struct gcra_args *a, const char *client, double per_s, int burst, int take)
{
	double interval = 1000.0 / per_s;

	snprintf(a->key, sizeof a->key, OT_REDIS_RL_FMT, client);
	snprintf(a->iv, sizeof a->iv, "%.3f", interval);
	snprintf(a->tol, sizeof a->tol, "%.3f", interval * burst);
	snprintf(a->n, sizeof a->n, "%d", take > 0 ? take : 0);
	a->argv[0] = "1", a->argv[1] = a->key, a->argv[2] = a->iv, a->argv[3] = a->tol, a->argv[4] = a->n;
}

int
ot_redis_gcra_of(const redisReply *rep, long *wait_ms)
{
	*wait_ms = 0;
	if (!rep || rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
	    rep->element[0]->type != REDIS_REPLY_INTEGER || rep->element[1]->type != REDIS_REPLY_INTEGER)
		return -1;
	*wait_ms = (long)rep->element[1]->integer;
	return rep->element[0]->integer == 1;
}

int
ot_redis_gcra_cmd(char **cmd, const char *client, double per_s, int burst, int take, int source)
{
	struct gcra_args a;
	const char *av[7];
	int i;

	gcra_args(&a, client, per_s, burst, take);
	av[0] = source ? "EVAL" : "EVALSHA";
	av[1] = source ? gcra_script.src : ot_redis_script_sha(&gcra_script);
	for (i = 0; i < 5; i++)
		av[2 + i] = a.argv[i];
	return redisFormatCommandArgv(cmd, 7, av, NULL);
}

int
ot_redis_gcra(redisContext *r, const char *client, double per_s, int burst, int take, long *wait_ms,
              char *errstr, size_t errsz)
{
	redisReply *rep;
	struct gcra_args a;
	int rc;

	*wait_ms = 0;
	if (r->err)
		return ot_err(OT_ESERVICE, errstr, errsz, "Redis: %s", r->errstr);
	gcra_args(&a, client, per_s, burst, take);
	rep = ot_redis_evalsha(r, &gcra_script, 5, a.argv, NULL);
	if ((rc = ot_redis_gcra_of(rep, wait_ms)) < 0)
		return reply_error(r, rep, "rate limit", errstr, errsz);
	freeReplyObject(rep);
	return rc;
}
