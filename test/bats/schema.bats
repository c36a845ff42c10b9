#!/usr/bin/env bats
# The databases' schema: ot-relay migrate, the version every tool checks at start, and the
# roles of lib/store/sql/roles.sql (migration, runtime, replication), each test on databases and
# roles of its own on the stack's PostgreSQL.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	load schema
	common_setup
	schema_setup
	# The newest migration this tree carries, per database.
	NEWEST=$(basename "$(ls "$ROOT"/lib/store/sql/orders/*.sql | sort | tail -1)" .sql)
	NEWEST_INV=$(basename "$(ls "$ROOT"/lib/store/sql/inventory/*.sql | sort | tail -1)" .sql)
	NEWEST_PAY=$(basename "$(ls "$ROOT"/lib/store/sql/payments/*.sql | sort | tail -1)" .sql)
	V=$((10#${NEWEST%%_*}))
	VI=$((10#${NEWEST_INV%%_*}))
	VP=$((10#${NEWEST_PAY%%_*}))
}

teardown() {
	stop_bg
	schema_teardown
}

@test "schema: ot-relay migrate brings the three databases to this release's schema once; again, it changes nothing" {
	fresh_dbs
	run --separate-stderr as -- ot-relay migrate
	assert_success
	assert_line --index 0 "{\"db\":\"orders\",\"from\":0,\"to\":$V,\"applied\":$V}"
	assert_line --index 1 "{\"db\":\"inventory\",\"from\":0,\"to\":$VI,\"applied\":$VI}"
	assert_line --index 2 "{\"db\":\"payments\",\"from\":0,\"to\":$VP,\"applied\":$VP}"
	echo "$stderr" | grep -q "\"msg\":\"applied migration orders/$NEWEST\""
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT max(version) FROM schema_migrations')" = "$V" ]
	# The CDC relay's publication is the schema's: a migration made it.
	[ "$(psql "$(conn "$O")" -XAtc "SELECT count(*) FROM pg_publication WHERE pubname = 'ot_outbox'")" = 1 ]
	run --separate-stderr as -- ot-relay migrate
	assert_success
	assert_output "{\"db\":\"orders\",\"from\":$V,\"to\":$V,\"applied\":0}
{\"db\":\"inventory\",\"from\":$VI,\"to\":$VI,\"applied\":0}
{\"db\":\"payments\",\"from\":$VP,\"to\":$VP,\"applied\":0}"
	run --separate-stderr as -- ot-relay migrate --db inventory
	assert_success
	assert_output "{\"db\":\"inventory\",\"from\":$VI,\"to\":$VI,\"applied\":0}"
	run --separate-stderr as -- ot-relay migrate --db payments
	assert_success
	assert_output "{\"db\":\"payments\",\"from\":$VP,\"to\":$VP,\"applied\":0}"
	[ "$(psql "$(conn "$P")" -XAtc "SELECT count(*) FROM pg_publication WHERE pubname = 'ot_outbox'")" = 1 ]
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
	psql "$(conn "$P")" -Xqc "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_from_a_later_release')"
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
		payments $VP $NEWEST_PAY ot-relay --db payments --once
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

@test "schema: the runtime role runs the pipeline's rows but no DDL, and refuses a schema left behind (exit 78)" {
	fresh_dbs
	roles "$O"
	roles "$I"
	roles "$P"
	run --separate-stderr as "$M" ot-relay migrate
	assert_success
	# The pipeline as the runtime role: stock, an order, its reservation, its confirmation.
	local sku="R-$RUNID" id
	printf '{"sku":"%s","qty":5}\n' "$sku" | as "$A" ot-reserve stock 2>/dev/null
	id=$(request "c-$RUNID" "[{\"sku\":\"$sku\",\"qty\":2}]" | as "$A" ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ]
	as "$A" ot-relay --db orders --once 2>/dev/null | as "$A" ot-reserve -i - 2>/dev/null
	as "$A" ot-relay --db inventory --once 2>/dev/null | as "$A" ot-consume -i - 2>/dev/null
	[ "$(psql "$(conn "$O")" -XAtc "SELECT status FROM orders WHERE id = '$id'")" = CONFIRMED ]
	[ "$(psql "$(conn "$I")" -XAtc "SELECT available, reserved FROM stock WHERE sku = '$sku'")" = "3|2" ]
	# DDL is refused it.
	run psql "$(conn "$O" "$A")" -X -v ON_ERROR_STOP=1 -c "CREATE TABLE extra (a int)"
	assert_failure
	assert_output --partial 'permission denied for schema public'
	run psql "$(conn "$O" "$A")" -X -v ON_ERROR_STOP=1 -c "DROP TABLE orders"
	assert_failure
	assert_output --partial 'must be owner of table orders'
	run psql "$(conn "$I" "$A")" -X -v ON_ERROR_STOP=1 -c "ALTER TABLE stock ADD COLUMN extra int"
	assert_failure
	assert_output --partial 'must be owner of table stock'
	# A schema behind this release (its migrations not run yet): the tool cannot migrate as
	# this role, and says what to do.
	psql "$(conn "$O")" -Xqc "DELETE FROM schema_migrations WHERE version = 4"
	run --separate-stderr as "$A" ot-place </dev/null
	assert_failure 78
	echo "$stderr" | grep -q "migrating orders to version $V (1 migration pending): permission denied for schema public: this role may not change the schema; run ot-relay migrate with the migration role's connection string first"
	run --separate-stderr as "$M" ot-relay migrate --db orders
	assert_success
	assert_output "{\"db\":\"orders\",\"from\":$V,\"to\":$V,\"applied\":1}"
	run --separate-stderr as "$A" ot-place </dev/null
	assert_success
}

@test "schema: the replication role streams the outbox for a CDC relay; the runtime role is refused (exit 78)" {
	fresh_dbs
	roles "$O"
	as "$M" ot-relay migrate --db orders >/dev/null 2>&1
	local id
	id=$(request "c-$RUNID" | as "$A" ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[ -n "$id" ]
	run --separate-stderr as "$A" ot-relay --db orders --mode cdc --once --slot "s_$ID"
	assert_failure 78
	echo "$stderr" | grep -q "role $A lacks REPLICATION: a relay in --mode cdc needs a role that has it"
	run --separate-stderr as "$C" ot-relay --db orders --mode cdc --once --slot "s_$ID"
	assert_success
	assert_output --partial "\"type\":\"ORDER_CREATED\",\"order_id\":\"$id\""
	echo "$stderr" | grep -q "cdc: created replication slot s_$ID"
	# Relayed rows are deleted: the replication role has the runtime role's rows too.
	[ "$(psql "$(conn "$O")" -XAtc 'SELECT count(*) FROM outbox')" = 0 ]
	# And it streams what is written after the slot was made.
	id=$(request "d-$RUNID" | as "$A" ot-place 2>/dev/null | sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	run --separate-stderr as "$C" ot-relay --db orders --mode cdc --once --slot "s_$ID"
	assert_success
	assert_output --partial "\"order_id\":\"$id\""
	run --separate-stderr as "$C" ot-relay --db orders --mode cdc --slot "s_$ID" --drop-slot
	assert_success
}

@test "schema: roles.sql takes over a database made before the roles, and run again changes nothing" {
	fresh_dbs
	# Made by the superuser, as before the roles.
	as -- ot-relay migrate >/dev/null 2>&1
	roles "$O"
	[ "$(psql "$(conn "$O")" -XAtc "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'")" = "$M" ]
	[ "$(psql "$(conn "$O")" -XAtc "SELECT pg_get_userbyid(pubowner) FROM pg_publication WHERE pubname = 'ot_outbox'")" = "$M" ]
	psql "$(conn "$O")" -XAt -c "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1" \
		-c "SELECT rolname, rolreplication FROM pg_roles WHERE rolname IN ('$M', '$A', '$C') ORDER BY 1" \
		-c "SELECT relname, relacl FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1" >"$BATS_TEST_TMPDIR/before"
	roles "$O"
	psql "$(conn "$O")" -XAt -c "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' ORDER BY 1" \
		-c "SELECT rolname, rolreplication FROM pg_roles WHERE rolname IN ('$M', '$A', '$C') ORDER BY 1" \
		-c "SELECT relname, relacl FROM pg_class WHERE relnamespace = 'public'::regnamespace ORDER BY 1" >"$BATS_TEST_TMPDIR/after"
	diff -u "$BATS_TEST_TMPDIR/before" "$BATS_TEST_TMPDIR/after"
	# The migration role can now alter what the superuser made.
	psql "$(conn "$O")" -Xqc "DELETE FROM schema_migrations WHERE version = 4"
	run --separate-stderr as "$M" ot-relay migrate --db orders
	assert_success
	assert_output "{\"db\":\"orders\",\"from\":$V,\"to\":$V,\"applied\":1}"
	run --separate-stderr as "$A" ot-place </dev/null
	assert_success
}
