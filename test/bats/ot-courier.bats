#!/usr/bin/env bats
# scripts/ot-courier, the simulated courier feed: no service needed.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
}

@test "ot-courier: -h prints the usage and the options to stdout, ending with the last option, and exits 0" {
	run --separate-stderr ot-courier -h
	assert_success
	assert_line --index 0 'usage: ot-courier [-n POSITIONS] [-s prep|transit|delivered|all]'
	assert_equal "${lines[${#lines[@]} - 1]}" '  -h             this help'
	assert_line --partial '-n POSITIONS   IN_TRANSIT updates per order (default 3)'
	assert_equal "$stderr" ''
}

@test "ot-courier: an unknown option, a missing value, a bad -n or -s exits 64 with a message on stderr" {
	run --separate-stderr ot-courier -x
	assert_failure 64
	assert_equal "$stderr" 'usage: ot-courier [-n POSITIONS] [-s prep|transit|delivered|all]'
	run --separate-stderr ot-courier -n
	assert_failure 64
	run --separate-stderr ot-courier -n many
	assert_failure 64
	assert_equal "$stderr" 'ot-courier: -n many: expected a number of positions'
	run --separate-stderr ot-courier -s lost
	assert_failure 64
	assert_equal "$stderr" 'ot-courier: -s lost: expected prep, transit, delivered or all'
	assert_output ''
}

@test "ot-courier: each order gets PREPARING, -n IN_TRANSIT positions and DELIVERED, each with an id of its own" {
	a=0b6c0000-0000-4000-8000-00000000000a
	b=0b6c0000-0000-4000-8000-00000000000b
	tp=00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01
	printf '%s\n\n{"order_id":"%s","traceparent":"%s"}\n' "$a" "$b" "$tp" > "$BATS_TEST_TMPDIR/in"
	ot-courier -n 2 < "$BATS_TEST_TMPDIR/in" > "$BATS_TEST_TMPDIR/out"
	run jq -r '[.type, .order_id, .source, .data.status, .traceparent // "-"] | join(" ")' "$BATS_TEST_TMPDIR/out"
	assert_output "$(printf 'DELIVERY_UPDATED %s ot-courier %s -\n' "$a" PREPARING "$a" IN_TRANSIT "$a" IN_TRANSIT "$a" DELIVERED
		printf 'DELIVERY_UPDATED %s ot-courier %s %s\n' "$b" PREPARING "$tp" "$b" IN_TRANSIT "$tp" "$b" IN_TRANSIT "$tp" "$b" DELIVERED "$tp")"
	run bash -c "jq -r .id '$BATS_TEST_TMPDIR/out' | sort -u | wc -l"
	assert_output 8
}
