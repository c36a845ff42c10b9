/* ot_rcluster: a small synchronous Redis Cluster client over hiredis: key to slot, slot to master. */
#ifndef OT_RCLUSTER_H
#define OT_RCLUSTER_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#define OT_RCLUSTER_SLOTS 16384
/* How many MOVED and ASK answers one command follows before it gives up. */
#define OT_RCLUSTER_MAX_REDIRECTS 5

/* The map of slots to masters (from CLUSTER SLOTS; replicas are not used) and one connection to
 * each master. One object per thread: nothing in it is locked.
 *
 * Ownership: every redisContext handed out belongs to the object; the caller never frees one.
 * It stays valid until the next ot_rcluster_command_argv, ot_rcluster_refresh or ot_rcluster_free
 * on the same object (they may drop nodes that left the map), or until it fails: once its err is
 * set, the next call that reaches its node frees it and connects again. */
struct ot_rcluster;

/* The hash slot of key[0..len), as the Redis Cluster spec computes it: CRC16 (XMODEM) mod 16384
 * of the hash tag, which is what lies between the first '{' and the first '}' after it when that
 * is not empty; otherwise of the whole key. So order:{id} and orderlog:{id} share a slot. */
unsigned ot_rcluster_slot(const char *key, size_t len);

/* Connects to the cluster through url (any form ot_redis_connect accepts; its db must be 0) and
 * reads its map. Every node is reached with the URL's scheme, user, password and CA file, at the
 * address the cluster announces. Returns NULL with errstr when it cannot; *not_cluster (may be
 * NULL) is then 1 when the server's answer to CLUSTER SLOTS says to use it as a single server
 * (its cluster support is disabled, or the user may not ask: NOPERM, an unknown command), else 0
 * (unreachable, or not ready: LOADING, say). On a cluster the URL's user needs
 * +cluster|slots. Caller frees with ot_rcluster_free. */
struct ot_rcluster *ot_rcluster_new(const char *url, int timeout_ms, int *not_cluster, char *errstr,
                                    size_t errsz);
/* Closes every connection and frees c. Accepts NULL. */
void ot_rcluster_free(struct ot_rcluster *c);

/* Reads the map again (CLUSTER SLOTS) from a master that answers, else from the URL given to
 * ot_rcluster_new. Connections to masters that stay are kept; those to nodes that left are
 * closed. Returns 0, or OT_ESERVICE with errstr (the old map stays). */
int ot_rcluster_refresh(struct ot_rcluster *c, char *errstr, size_t errsz);

/* The live connection to the master of key's slot, connected on first use; a broken one is
 * dropped and connected again, at most once per 200 ms per node. NULL while that master is
 * unreachable or the slot has none. */
redisContext *ot_rcluster_node(struct ot_rcluster *c, const char *key, size_t len);
/* The same for a slot (for a pipeline that groups its commands by slot). NULL for a slot past
 * OT_RCLUSTER_SLOTS. */
redisContext *ot_rcluster_node_of_slot(struct ot_rcluster *c, unsigned slot);

/* Runs argv[0..argc) (argvlen NULL: C strings) on the master of key's slot. A MOVED answer sets
 * that slot to the named master and reads the whole map again; an ASK answer runs ASKING, then
 * the command, on the named node and leaves the map alone; at most OT_RCLUSTER_MAX_REDIRECTS of
 * them. A broken connection is dropped, the map read again and the command sent once more (so a
 * command Redis got before the connection broke may run twice: send only commands that may).
 * Returns the reply, which may be an error reply (after too many redirections, the last MOVED or
 * ASK, with errstr), or NULL with errstr when no node answered. Caller freeReplyObject's. */
redisReply *ot_rcluster_command_argv(struct ot_rcluster *c, const char *key, size_t keylen, int argc,
                                     const char **argv, const size_t *argvlen, char *errstr,
                                     size_t errsz);

/* Whether rep is a redirection, for callers that pipeline and see the error replies themselves:
 * 1 MOVED, 2 ASK (with *slot, *port, and host: "" when the cluster gave no address, meaning the
 * host the command went to), 0 anything else, or a redirection that does not parse or whose host
 * does not fit in hostsz. */
int ot_rcluster_redirect(const redisReply *rep, int *slot, char *host, size_t hostsz, int *port);

/* The masters of the map, in the order of their first slot: how many, the live connection to
 * the i-th (as ot_rcluster_node; NULL when unreachable or i is out of range), and its address
 * "host:port" (NULL when i is out of range). For the commands every master must get: SCAN,
 * PING, FLUSHALL, CLIENT TRACKING. */
size_t ot_rcluster_masters(struct ot_rcluster *c);
redisContext *ot_rcluster_master(struct ot_rcluster *c, size_t i);
const char *ot_rcluster_master_addr(struct ot_rcluster *c, size_t i);

#endif
