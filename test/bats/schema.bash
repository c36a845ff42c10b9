# Databases and roles of a test's own on the stack's PostgreSQL (schema.bats, k8s.bats):
# schema_setup in setup, schema_teardown in teardown.

schema_setup() {
	ID=${RUNID//-/_}
	DBS=()
	ROLES=()
}

# Drops what the test made: its databases (and their replication slots), then its roles.
schema_teardown() {
	local d r
	for d in "${DBS[@]}"; do
		psql "$(conn postgres)" -XAtq -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '$d'" \
			-c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = '$d'" \
			-c "DROP DATABASE IF EXISTS $d" >/dev/null 2>&1 || true
	done
	for r in "${ROLES[@]}"; do
		psql "$(conn postgres)" -Xqc "DROP ROLE IF EXISTS $r" >/dev/null 2>&1 || true
	done
}

# A connection string to database DB of the stack's server, as USER (default: the stack's
# superuser): conn DB [USER]
conn() {
	local c
	c=$(printf '%s' "$OT_ORDERS_DB" | sed "s/dbname=[^ ]*/dbname=$1/")
	if [ -n "${2:-}" ]; then
		c=$(printf '%s' "$c" | sed 's/user=[^ ]*//')
		c="$c user=$2"
	fi
	printf '%s\n' "$c"
}

# Databases of this test: fresh_dbs (sets O, I and P, the orders, inventory and payments
# databases)
fresh_dbs() {
	O=o_$ID I=i_$ID P=p_$ID
	psql "$(conn postgres)" -Xq -v ON_ERROR_STOP=1 -c "CREATE DATABASE $O" -c "CREATE DATABASE $I" \
		-c "CREATE DATABASE $P"
	DBS+=("$O" "$I" "$P")
}

# The three roles of lib/store/sql/roles.sql, named for this test, in database DB: roles DB
# (sets M, A, C: the migration, runtime and replication roles)
roles() {
	M=m_$ID A=a_$ID C=c_$ID
	ROLES=("$C" "$A" "$M")
	psql "$(conn "$1")" -Xq -v ON_ERROR_STOP=1 -v migrate_role="$M" -v app_role="$A" -v cdc_role="$C" \
		-f "$ROOT/lib/store/sql/roles.sql"
}

# The tools pointed at this test's databases as ROLE (-- for the superuser): as ROLE|-- CMD...
as() {
	local role=
	if [ "$1" != -- ]; then role=$1; fi
	shift
	env OT_ORDERS_DB="$(conn "$O" "$role")" OT_INVENTORY_DB="$(conn "$I" "$role")" \
		OT_PAYMENTS_DB="$(conn "$P" "$role")" "$@"
}
