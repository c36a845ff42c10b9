#!/usr/bin/env bats
# The container image (Containerfile, make image): built with podman from Debian's packages,
# then the whole pipeline run from it, each tool in its own container on the host network,
# against the local stack. Needs podman, runc and debootstrap (scripts/deps installs them).
bats_require_minimum_version 1.5.0

setup_file() {
	local root
	root=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
	for t in podman runc debootstrap; do
		command -v "$t" >/dev/null || { echo "$t is not installed (make deps)" >&2; return 1; }
	done
	"$root/scripts/image" build > "$root/.run/image-build.log" 2>&1 ||
		{ tail -30 "$root/.run/image-build.log" >&2; return 1; }
}

setup() {
	load helpers
	eval "$("$ROOT/scripts/image" env)"
	VERSION=$(sed -n 's/^VERSION *= *//p' "$ROOT/Makefile")
	IMAGE=localhost/ordertrack:$VERSION
	CONTAINERS=()
}

teardown() {
	local c
	# A failed test shows what each tool said.
	if [ -z "${BATS_TEST_COMPLETED:-}" ]; then
		for c in "${CONTAINERS[@]}"; do echo "== $c" >&2; podman logs "$c" 2>&1 | tail -15 >&2; done
	fi
	# SIGTERM first, as Kubernetes would: each tool finishes its batch and exits 0.
	for c in "${CONTAINERS[@]}"; do podman stop -t 15 "$c" >/dev/null 2>&1 || true; done
	for c in "${CONTAINERS[@]}"; do podman rm -f "$c" >/dev/null 2>&1 || true; done
}

# As the Kubernetes pods run it: read-only root with no tmpfs, no capabilities, no new
# privileges.
RESTRICTED=(--read-only --read-only-tmpfs=false --cap-drop ALL --security-opt no-new-privileges)

# A tool from the image, on the host network, with the stack's settings: ot TOOL ARGS...
ot() {
	podman run --rm -i "${RESTRICTED[@]}" --network host --env 'OT_*' "$IMAGE" "$@"
}

# A long-running tool in a container of its own: ot_bg NAME TOOL ARGS...
ot_bg() {
	local name="ot-$RUNID-$1"
	shift
	podman run -d --name "$name" "${RESTRICTED[@]}" --network host --env 'OT_*' "$IMAGE" "$@" >/dev/null
	CONTAINERS+=("$name")
}

@test "image: non-root, labelled, no HEALTHCHECK, no shell needed, no build machine's mirror" {
	run podman image inspect --format '{{.Config.User}}|{{json .Config.Entrypoint}}|{{json .Config.Cmd}}|{{json .Config.Healthcheck}}' "$IMAGE"
	assert_output '10001:10001|null|["ot-serve"]|null'
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.version"}}|{{index .Labels "org.opencontainers.image.revision"}}' "$IMAGE"
	assert_output --regexp "^$VERSION\|$(git -C "$ROOT" rev-parse HEAD)(-dirty)?\$"
	run podman image inspect --format '{{index .Labels "org.opencontainers.image.source"}}' "$IMAGE"
	[ -n "$output" ]
	# Each tool starts straight from the args, as the Kubernetes manifests run them.
	for t in ot-place ot-reserve ot-consume ot-relay ot-cache ot-serve; do
		run podman run --rm "$IMAGE" "$t" -V
		assert_success
		assert_output "$VERSION"
	done
	run podman run --rm "$IMAGE" id -u
	assert_output 10001
	# No library is missing, and apt knows only Debian's own addresses and no package lists.
	run podman run --rm "$IMAGE" sh -c 'for b in /usr/local/bin/ot-*; do [ "$b" = /usr/local/bin/ot-courier ] || ldd "$b"; done | grep "not found"; grep -rhoE "https?://[^ /]+" /etc/apt; ls /var/lib/apt/lists | grep -v -x -e lock -e partial'
	assert_output "$(printf 'http://deb.debian.org\nhttp://deb.debian.org')"
	run podman image inspect --format '{{.Size}}' "$IMAGE"
	echo "# image $IMAGE: $((output / 1000000)) MB" >&3
	[ "$output" -lt 200000000 ]
}

@test "image: ot-courier runs from the image with what the base has" {
	run bash -c "echo 0b6c0000-0000-4000-8000-000000000001 | podman run --rm -i '$IMAGE' ot-courier -n 2"
	assert_success
	[ "${#lines[@]}" = 4 ]
	assert_line --index 3 --partial '"status":"DELIVERED"'
	# Event ids differ from run to run with the image's awk (mawk), or consumers skip them.
	local first=$output
	run bash -c "echo 0b6c0000-0000-4000-8000-000000000001 | podman run --rm -i '$IMAGE' ot-courier -n 2"
	[ "$(printf '%s\n%s\n' "$first" "$output" | sed 's/.*"id":"\([^"]*\)".*/\1/' | sort -u | wc -l)" = 8 ]
}

@test "image: orders placed, confirmed and delivered by the tools in restricted containers, read back over HTTP" {
	common_setup
	local sku="IMG-$RUNID" port=$((24000 + RANDOM % 8000)) id i body n c
	ot ot-relay topics create >/dev/null 2>&1
	printf '{"sku":"%s","qty":10}\n' "$sku" | ot ot-reserve stock 2>/dev/null
	ot_bg relay-orders ot-relay --db orders -O kafka
	ot_bg relay-inventory ot-relay --db inventory -O kafka
	ot_bg reserve ot-reserve -i "kafka:orders.events" -G "r-$RUNID" --http-addr "127.0.0.1:$((port + 1))"
	ot_bg consume ot-consume -i "kafka:inventory.events,delivery.updates" -G "c-$RUNID"
	# A new group starts at the end of each partition: no event goes out before both
	# consumers hold their partitions.
	for c in reserve consume; do
		for i in $(seq 1 150); do
			podman logs "ot-$RUNID-$c" 2>&1 | grep -q '"msg":"kafka: assigned' && break
			sleep 0.2
		done
	done
	sleep 1
	ot_bg serve ot-serve --http-addr "127.0.0.1:$port"
	for i in $(seq 1 3); do request "c-$RUNID-$i" "[{\"sku\":\"$sku\",\"qty\":2}]"; done |
		ot ot-place > "$BATS_TEST_TMPDIR/placed" 2>/dev/null
	[ "$(wc -l < "$BATS_TEST_TMPDIR/placed")" = 3 ]
	wait_sql orders "SELECT count(*) FROM orders WHERE customer_id LIKE 'c-$RUNID-%' AND status = 'CONFIRMED'" 3 90
	ot ot-courier -n 2 < "$BATS_TEST_TMPDIR/placed" | ot ot-relay -i - -O kafka:delivery.updates 2>/dev/null
	n=0
	for id in $(sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p' "$BATS_TEST_TMPDIR/placed"); do
		for i in $(seq 1 300); do
			body=$(curl -s "http://127.0.0.1:$port/orders/$id" || true)
			[[ "$body" != *'"status":"DELIVERED"'* ]] || break
			sleep 0.2
		done
		echo "# GET /orders/$id from the ot-serve container: $body" >&3
		[[ "$body" == *"\"order_id\":\"$id\""* || "$body" == *"\"id\":\"$id\""* ]]
		[[ "$body" == *'"status":"DELIVERED"'* ]]
		n=$((n + 1))
	done
	[ "$n" = 3 ]
	[ "$(sql_inventory "SELECT available, reserved FROM stock WHERE sku = '$sku'")" = "4|6" ]
	# The containerised ot-serve answers its probes on the port it was given.
	[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]
	# SIGTERM: every tool drains and exits 0, as a pod does on its grace period.
	for c in "${CONTAINERS[@]}"; do podman stop -t 20 "$c" >/dev/null; done
	for c in "${CONTAINERS[@]}"; do
		run podman inspect --format '{{.State.ExitCode}}' "$c"
		[ "$output" = 0 ] || { podman logs "$c" 2>&1 | tail -5 >&2; false; }
	done
}
