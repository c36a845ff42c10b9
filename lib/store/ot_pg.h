/* ot_pg: PostgreSQL connections, queries and versioned migrations. */
#ifndef OT_PG_H
#define OT_PG_H

#include <libpq-fe.h>
#include <stddef.h>
#include <stdio.h>

struct ot_migration {
	const char *db;      /* "orders", "inventory" or "payments": the folder under lib/store/sql/ */
	int version;
	const char *name;
	const char *sql;
};
/* Every migration, in order, ending with a NULL db (generated from lib/sql/). */
extern const struct ot_migration ot_migrations[];

/* How long a migration waits for any one lock (lock_timeout) unless told otherwise. */
#define OT_PG_LOCK_TIMEOUT_MS 10000

/* Where a database's schema stands against the migrations this binary carries. */
struct ot_pg_schema {
	int version;        /* the newest version recorded in schema_migrations (0: none) */
	char name[64];      /* its migration's name, as recorded */
	int known;          /* the newest version this binary carries */
	char known_name[64];
	int pending;        /* versions this binary carries that the database has not */
};

/* Connects (5 s timeout) and routes server notices to the log. Returns NULL with errstr;
 * the caller frees with PQfinish. */
PGconn *ot_pg_connect(const char *conninfo, char *errstr, size_t errsz);
/* Reads db's ("orders"/"inventory"/"payments") schema version into *s, with statements a role allowed
 * only DML may run (no lock, no DDL). Returns 0, or OT_ECONFIG with errstr naming both
 * versions when the database is newer than this binary (migrated by a later release: an
 * older binary must not run against it), or another ot_rc. */
int ot_pg_schema(PGconn *c, const char *db, struct ot_pg_schema *s, char *errstr, size_t errsz);
/* Applies db's pending migrations in order, each in a transaction with its row in
 * schema_migrations, under an advisory lock so that callers at once apply each once.
 * lock_timeout_ms (> 0) bounds the wait for every lock, the advisory one included: past it,
 * OT_ESERVICE with errstr saying so, that migration not applied. A schema newer than this
 * binary: OT_ECONFIG, nothing done; a role not allowed the DDL: OT_ECONFIG. *s (may be NULL)
 * gets the schema as found before. *applied (may be NULL) counts the migrations applied.
 * Returns 0 or an ot_rc. */
int ot_pg_migrate(PGconn *c, const char *db, int lock_timeout_ms, struct ot_pg_schema *s, int *applied,
                  char *errstr, size_t errsz);
/* ot_pg_migrate of db at conninfo over a connection of its own, said in one JSON line on f,
 * {"db","from","to","applied"}, and in the log. Returns 0 or an ot_rc with errstr. */
int ot_pg_migrate_report(const char *conninfo, const char *db, long lock_timeout_ms, FILE *f, char *errstr,
                         size_t errsz);
/* Connects and checks the schema: newer than this binary is refused (OT_ECONFIG); behind
 * (a new database, or a release whose migrations have not run) is migrated, which needs a
 * role allowed DDL; current needs nothing more, so a role with DML only will do. Returns
 * NULL with *rc and errstr. */
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
