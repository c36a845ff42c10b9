/* ot_pg: PostgreSQL connections, queries and versioned migrations. */
#ifndef OT_PG_H
#define OT_PG_H

#include <libpq-fe.h>
#include <stddef.h>

struct ot_migration {
	const char *db;      /* "orders" or "inventory": the folder under lib/sql/ */
	int version;
	const char *name;
	const char *sql;
};
/* Every migration, in order, ending with a NULL db (generated from lib/sql/). */
extern const struct ot_migration ot_migrations[];

/* Connects (5 s timeout) and routes server notices to the log. Returns NULL with errstr;
 * the caller frees with PQfinish. */
PGconn *ot_pg_connect(const char *conninfo, char *errstr, size_t errsz);
/* Applies the pending migrations of db ("orders"/"inventory") under an advisory lock.
 * Returns 0 or an ot_rc. */
int ot_pg_migrate(PGconn *c, const char *db, char *errstr, size_t errsz);
/* Connect + migrate. Returns NULL with *rc and errstr. */
PGconn *ot_pg_open(const char *conninfo, const char *db, int *rc, char *errstr, size_t errsz);

/* Runs a statement with text params. Returns the result (caller PQclear's) when its status is
 * COMMAND_OK or TUPLES_OK, else NULL with *rc (OT_ESERVICE when the connection is bad or the
 * error is transient, OT_EINPUT for a data error) and errstr. */
PGresult *ot_pg_query(PGconn *c, const char *sql, int nparams, const char *const *params,
                      int *rc, char *errstr, size_t errsz);
/* Like ot_pg_query for a statement whose rows are not needed. Returns 0 or an ot_rc. */
int ot_pg_exec(PGconn *c, const char *sql, int nparams, const char *const *params,
               char *errstr, size_t errsz);
/* Rolls back quietly if a transaction is open. */
void ot_pg_rollback(PGconn *c);
/* Resets a broken connection. Returns 0 when it is usable again, else OT_ESERVICE with
 * errstr (which may be NULL) saying why. */
int ot_pg_ensure(PGconn *c, char *errstr, size_t errsz);
/* Records events ids[0..n) (NULL entries are left out) as processed by consumer, in one
 * statement, inside the caller's transaction: fresh[i] is 1 for an event seen now for the
 * first time (the first of its copies within ids), 0 for one processed before. Returns 0 or an
 * ot_rc. */
int ot_pg_mark_processed(PGconn *c, const char *consumer, const char *const *ids, size_t n, int *fresh,
                         char *errstr, size_t errsz);

#endif
