#!/usr/bin/env bats
# ot_stripe, the payment processor's client, against the stack's Stripe API emulator
# (stripe-stateful-mock, OT_PAY_URL), through build/tools/stripe-call (make tools), directly or
# through test/tools/http-faults.py, which fails requests on purpose. What the emulator holds is
# read with curl, not with the client under test.
bats_require_minimum_version 1.5.0

setup() {
	load helpers
	common_setup
	: "${OT_PAY_URL:?the Stripe API emulator of the stack: eval \"\$(scripts/ot-stack env)\" first}"
	: "${OT_PAY_KEY:?}"
	CALL=$ROOT/build/tools/stripe-call
	[ -x "$CALL" ] || { echo "build/tools/stripe-call is missing: make tools" >&2; false; }
	ORDER=$(uuid)
}

teardown() {
	stop_bg
	show_logs
}

# stripe-call with fast backoff: call [OPTION...] OP ARG...
call() { "$CALL" -b 20 "$@"; }
# A field of the JSON line in $output: field NAME
field() { jq -r ".$1 | select(. != null)" <<<"$output"; }
# The emulator's charges that carry order $1, as "id captured refunded amount_refunded" lines.
mock_charges() {
	curl -sf -u "$OT_PAY_KEY:" "$OT_PAY_URL/v1/charges" |
		jq -r --arg o "$1" '.data[] | select(.metadata.order_id == $o) | "\(.id) \(.captured) \(.refunded) \(.amount_refunded)"'
}
# What the fault proxy saw: one "METHOD PATH KEY ACTION" line per request.
faults_seen() { curl -sf "$FAULTS_URL/__faults" | jq -r '.requests[] | "\(.method) \(.path) \(.idempotency_key) \(.action)"'; }

@test "ot_stripe: authorize tok_visa is OK and leaves one charge at the processor, not captured, with the order in its metadata" {
	run --separate-stderr call authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	assert_success
	[ "$(field outcome)" = ok ]
	[ "$(field captured)" = false ]
	[ "$(field attempts)" = 1 ]
	id=$(field charge_id)
	run curl -sf -u "$OT_PAY_KEY:" "$OT_PAY_URL/v1/charges/$id"
	assert_success
	[ "$(jq -r '[.captured, .amount, .currency, .metadata.order_id] | join(" ")' <<<"$output")" = "false 1500 eur $ORDER" ]
	run mock_charges "$ORDER"
	assert_output "$id false false 0"
}

@test "ot_stripe: tok_chargeDeclined and tok_chargeDeclinedInsufficientFunds are DECLINED with Stripe's code and decline code, not retried" {
	run --separate-stderr call authorize "$ORDER" 1500 eur tok_chargeDeclined "$ORDER:authorize"
	assert_success
	[ "$(jq -r '[.outcome, .http_status, .attempts, .error.type, .error.code, .error.decline_code] | join(" ")' <<<"$output")" = \
		"declined 402 1 card_error card_declined generic_decline" ]
	[ -n "$(field charge_id)" ]
	run --separate-stderr call authorize "$ORDER-2" 1500 eur tok_chargeDeclinedInsufficientFunds "$ORDER-2:authorize"
	assert_success
	[ "$(jq -r '[.outcome, .attempts, .error.code, .error.decline_code] | join(" ")' <<<"$output")" = \
		"declined 1 card_declined insufficient_funds" ]
}

@test "ot_stripe: a request the processor refuses (400) is INVALID and sent once" {
	run --separate-stderr call authorize "$ORDER" 10 eur tok_visa "$ORDER:authorize"
	assert_success
	[ "$(jq -r '[.outcome, .http_status, .attempts, .error.code] | join(" ")' <<<"$output")" = "invalid 400 1 amount_too_small" ]
	run call get ch_doesnotexist
	[ "$(field outcome)" = not_found ]
}

@test "ot_stripe: capture captures the authorisation; a refund after it gives part back" {
	run call authorize "$ORDER" 2000 eur tok_visa "$ORDER:authorize"
	id=$(field charge_id)
	run --separate-stderr call capture "$id" 0 "$ORDER:capture"
	assert_success
	[ "$(jq -r '[.outcome, .captured, .amount_captured] | join(" ")' <<<"$output")" = "ok true 2000" ]
	run --separate-stderr call refund "$id" 500 "$ORDER:refund"
	[ "$(jq -r '[.outcome, .charge_id, .refund_amount] | join(" ")' <<<"$output")" = "ok $id 500" ]
	[ -n "$(field refund_id)" ]
	run mock_charges "$ORDER"
	assert_output "$id true false 500"
	run call get "$id"
	[ "$(jq -r '[.outcome, .captured, .amount_refunded] | join(" ")' <<<"$output")" = "ok true 500" ]
}

@test "ot_stripe: void releases an authorisation not captured (a refund of all of it)" {
	run call authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	id=$(field charge_id)
	run --separate-stderr call void "$id" "$ORDER:void"
	assert_success
	[ "$(jq -r '[.outcome, .charge_id, .refund_amount] | join(" ")' <<<"$output")" = "ok $id 1500" ]
	run mock_charges "$ORDER"
	assert_output "$id false true 1500"
}

@test "ot_stripe: the same idempotency key twice makes one charge, and answers it twice" {
	run call authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	first=$(field charge_id)
	run call authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	[ "$(field outcome)" = ok ]
	[ "$(field charge_id)" = "$first" ]
	run mock_charges "$ORDER"
	assert_output "$first false false 0"
}

@test "ot_stripe: 500s then an answer: retried with the same key, OK, exactly one charge" {
	faults '500*2'
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	assert_success
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "ok 3" ]
	id=$(field charge_id)
	run faults_seen
	assert_output "$(printf 'POST /v1/charges %s:authorize %s\n' "$ORDER" 500 "$ORDER" 500 "$ORDER" forward)"
	run mock_charges "$ORDER"
	assert_output "$id false false 0"
}

@test "ot_stripe: a 429 is retried after its Retry-After, not sooner" {
	faults '429:2'
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "ok 2" ]
	gap=$(curl -sf "$FAULTS_URL/__faults" | jq '.requests[1].t - .requests[0].t')
	echo "gap: $gap s" >&2
	jq -e --argjson g "$gap" -n '$g >= 1.95 and $g < 4' >/dev/null
	run mock_charges "$ORDER"
	[ "${#lines[@]}" = 1 ]
}

@test "ot_stripe: an answer lost after the request was sent (reset, or late past the timeout) is retried with the same key: one charge" {
	faults drop
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "ok 2" ]
	id=$(field charge_id)
	run mock_charges "$ORDER"
	assert_output "$id false false 0"
	curl -sf -d 'delay:2500' "$FAULTS_URL/__faults" >/dev/null
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 -t 1000 authorize "$ORDER-2" 1500 eur tok_visa "$ORDER-2:authorize"
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "ok 2" ]
	id=$(field charge_id)
	run mock_charges "$ORDER-2"
	assert_output "$id false false 0"
}

@test "ot_stripe: every answer lost is UNKNOWN, the charge was made once, and the lookup by order finds it" {
	faults 'drop*'
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 -a 3 authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	assert_success
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "unknown 3" ]
	run faults_seen
	[ "${#lines[@]}" = 3 ]
	run mock_charges "$ORDER"
	[ "${#lines[@]}" = 1 ]
	made=${lines[0]%% *}
	run --separate-stderr call find "$ORDER"
	assert_success
	[ "$(jq -r '[.outcome, .charge_id, .matches, .captured] | join(" ")' <<<"$output")" = "ok $made 1 false" ]
	run call find "$(uuid)"
	[ "$(field outcome)" = not_found ]
}

@test "ot_stripe: after repeated failures the breaker opens: UNAVAILABLE, and no request reaches the processor" {
	faults '500*'
	run --separate-stderr env OT_PAY_URL="$FAULTS_URL" "$CALL" -n 4 -a 1 -T 2 -O 60000 \
		authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	assert_success
	run jq -r '[.outcome, .attempts] | join(" ")' <<<"$output"
	assert_output "$(printf 'unknown 1\nunknown 1\nunavailable 0\nunavailable 0')"
	run faults_seen
	[ "${#lines[@]}" = 2 ]
	# Nothing listening: nothing was sent, so nothing can have happened.
	run --separate-stderr env OT_PAY_URL="http://127.0.0.1:$(free_port)" "$CALL" -b 20 -a 2 get ch_x
	[ "$(jq -r '[.outcome, .attempts] | join(" ")' <<<"$output")" = "unavailable 0" ]
}

@test "ot_stripe: the key appears in no output and no log line, retries and refusals included" {
	faults '500*2'
	key="sk_test_${RUNID//-/_}_do_not_print"
	run --separate-stderr env OT_LOG_LEVEL=debug OT_PAY_KEY="$key" OT_PAY_URL="$FAULTS_URL" "$CALL" -b 20 \
		authorize "$ORDER" 1500 eur tok_visa "$ORDER:authorize"
	[ "$(field outcome)" = ok ]
	[ -n "$stderr" ]
	[[ $output != *"$key"* ]] || { echo "$output" >&2; false; }
	[[ $stderr != *"$key"* ]] || { echo "$stderr" >&2; false; }
	# A key the processor refuses: 401, INVALID, and its message does not carry the key either.
	bad="rk_live_${RUNID//-/_}_do_not_print"
	run --separate-stderr env OT_LOG_LEVEL=debug OT_PAY_KEY="$bad" "$CALL" authorize "$ORDER" 1500 eur tok_visa "$ORDER:x"
	[ "$(jq -r '[.outcome, .http_status] | join(" ")' <<<"$output")" = "invalid 401" ]
	[[ $output != *"$bad"* ]] || { echo "$output" >&2; false; }
	[[ $stderr != *"$bad"* ]] || { echo "$stderr" >&2; false; }
}

@test "ot-stack: status shows the Stripe API emulator, env exports its URL and key" {
	run --separate-stderr ot-stack status
	assert_line "stripe-mock running ${OT_PAY_URL#http://}"
	run --separate-stderr ot-stack env
	assert_success
	assert_line "export OT_PAY_URL='$OT_PAY_URL'"
	assert_line "export OT_PAY_KEY='$OT_PAY_KEY'"
}
