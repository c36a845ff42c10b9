#!/usr/bin/env bats
# The databases' schema: ot-relay migrate and the version every tool checks at start, each test
# on databases of its own on the stack's PostgreSQL.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	ID=${RUNID//-/_}
	DBS=()
	ROLES=()
	# The newest migration this tree carries, per database.
	NEWEST=$(basename "$(ls "$ROOT"/lib/sql/orders/*.sql | sort | tail -1)" .sql)
	NEWEST_INV=$(basename "$(ls "$ROOT"/lib/sql/inventory/*.sql | sort | tail -1)" .sql)
	V=$((10#${NEWEST%%_*}))
	VI=$((10#${NEWEST_INV%%_*}))
}

teardown() {
	stop_bg
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

# Databases of this test: fresh_dbs (sets O and I, the orders and inventory databases)
fresh_dbs() {
	O=o_$ID I=i_$ID
	psql "$(conn postgres)" -Xq -v ON_ERROR_STOP=1 -c "CREATE DATABASE $O" -c "CREATE DATABASE $I"
	DBS+=("$O" "$I")
}

# The tools pointed at this test's databases as ROLE (default: the superuser): as [ROLE] CMD...
as() {
	local role=
	if [ "$1" != -- ]; then role=$1; fi
	shift
	env OT_ORDERS_DB="$(conn "$O" "$role")" OT_INVENTORY_DB="$(conn "$I" "$role")" "$@"
}

@test "schema: ot-relay migrate brings both databases to this release's schema once; again, it changes nothing" {
	fresh_dbs
	run --separate-stderr as -- ot-relay migrate
	assert_success
	assert_line --index 0 "{\"db\":\"orders\",\"from\":0,\"to\":$V,\"applied\":$V}"
	assert_line --index 1 "{\"db\":\"inventory\",\"from\":0,\"to\":$VI,\"applied\":$VI}"
	echo "$stderr" | grep -q "\"msg\":\"applied migration orders/$NEWEST\""
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT max(version) FROM schema_migrations')" = "$V" ]
	run --separate-stderr as -- ot-relay migrate
	assert_success
	assert_output "{\"db\":\"orders\",\"from\":$V,\"to\":$V,\"applied\":0}
{\"db\":\"inventory\",\"from\":$VI,\"to\":$VI,\"applied\":0}"
	run --separate-stderr as -- ot-relay migrate --db inventory
	assert_success
	assert_output "{\"db\":\"inventory\",\"from\":$VI,\"to\":$VI,\"applied\":0}"
	# Its own options only.
	for a in "--db other" "--lock-timeout 0" "--lock-timeout soon" "-b 127.0.0.1:1" "extra"; do
		run --separate-stderr as -- ot-relay migrate $a
		assert_failure 64
	done
}

@test "schema: every tool that owns a database refuses a schema newer than it knows, naming both versions (exit 78)" {
	fresh_dbs
	as -- ot-relay migrate >/dev/null 2>&1
	psql "$(conn "$O")" -Xqc "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_from_a_later_release')"
	psql "$(conn "$I")" -Xqc "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_from_a_later_release')"
	local port cmd
	port=$(free_port)
	while read -r db version newest cmd; do
		run --separate-stderr as -- timeout 30 $cmd </dev/null
		echo "# $cmd: exit $status" >&3
		assert_failure 78
		echo "$stderr" | grep -q "the $db schema is at version 99 (0099_from_a_later_release), newer than this binary knows: its newest is $version ($newest)" ||
			{ echo "$cmd said: $stderr" >&2; false; }
	done <<-EOF
		orders $V $NEWEST ot-place
		orders $V $NEWEST ot-consume -i -
		orders $V $NEWEST ot-cache get
		orders $V $NEWEST ot-cache warm
		orders $V $NEWEST ot-serve --http-addr 127.0.0.1:$port
		orders $V $NEWEST ot-relay --db orders --once
		orders $V $NEWEST ot-relay migrate
		inventory $VI $NEWEST_INV ot-reserve -i -
		inventory $VI $NEWEST_INV ot-reserve stock
		inventory $VI $NEWEST_INV ot-relay --db inventory --mode cdc --once --slot s_$ID
	EOF
	# Nothing was changed: the newer schema is as it was.
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT max(version) FROM schema_migrations')" = 99 ]
}

@test "schema: migrate waits no longer than --lock-timeout for a lock (exit 69, nothing applied), then applies once it is free" {
	fresh_dbs
	as -- ot-relay migrate >/dev/null 2>&1
	# 0004_outbox_vacuum pending again (it alters the outbox), while a transaction holds the table.
	psql "$(conn "$O")" -Xqc "DELETE FROM schema_migrations WHERE version = 4"
	local from
	from=$(psql "$(conn "$O")" -XAtc 'SELECT max(version) FROM schema_migrations')
	start_bg "$BATS_TEST_TMPDIR/locker.log" psql "$(conn "$O") application_name=locker_$ID" -Xq -o /dev/null \
		-c "BEGIN" -c "LOCK TABLE outbox IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(120)"
	held() { # held MODE: whether locker_$ID holds a lock of that mode
		[ "$(psql "$(conn "$O")" -XAtc "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE a.application_name = 'locker_$ID' AND l.mode = '$1' AND l.granted")" -gt 0 ]
	}
	for i in $(seq 1 50); do held AccessExclusiveLock && break; sleep 0.1; done
	held AccessExclusiveLock
	# timeout: a migrate that hung would fail here (124), not wait for the lock.
	run --separate-stderr as -- timeout 30 ot-relay migrate --db orders --lock-timeout 1s
	assert_failure 69
	echo "$stderr" | grep -q "migrate: migrating orders to version $V: 0004_outbox_vacuum: a lock was not granted within lock_timeout (1000 ms): another session holds it; nothing of it was applied"
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT count(*) FROM schema_migrations WHERE version = 4')" = 0 ]
	# The same with another migration of the database under way (its advisory lock held).
	psql "$(conn "$O")" -XAtqc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker_$ID'" >/dev/null
	stop_bg
	start_bg "$BATS_TEST_TMPDIR/locker.log" psql "$(conn "$O") application_name=locker_$ID" -Xq -o /dev/null \
		-c "SELECT pg_advisory_lock(hashtext('ordertrack.migrate.orders'))" -c "SELECT pg_sleep(120)"
	for i in $(seq 1 50); do held ExclusiveLock && break; sleep 0.1; done
	run --separate-stderr as -- timeout 30 ot-relay migrate --db orders --lock-timeout 500ms
	assert_failure 69
	echo "$stderr" | grep -q "migrating orders: waiting for any other migration of it: a lock was not granted within lock_timeout (500 ms)"
	psql "$(conn "$O")" -XAtqc "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker_$ID'" >/dev/null
	stop_bg
	# Free: applied, once.
	run --separate-stderr as -- ot-relay migrate --db orders --lock-timeout 1s
	assert_success
	assert_output "{\"db\":\"orders\",\"from\":$from,\"to\":$V,\"applied\":1}"
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT count(*) FROM schema_migrations WHERE version = 4')" = 1 ]
}
