#!/usr/bin/env bash
# Runs the client quick starts of docs/clients.md against a real server:
# generates the Python and Go clients from proto/ into a temporary folder,
# starts `punctual serve` on a free loopback port with a fresh SQLite
# database, and runs each client (create, get, list, cancel; in Python also a
# 10,000-post BulkSchedule and its retry). Fails on the first mismatch.
#
#   bash clients/run-quickstarts.sh            # Python and Go
#   bash clients/run-quickstarts.sh python     # one language
#
# PUNCTUAL_BIN names the `punctual` binary to serve with; without it the
# script runs `cargo build --bin punctual`. Needs python3 with grpcio,
# grpcio-tools and googleapis-common-protos; for Go, Debian's golang-go,
# protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc,
# golang-google-protobuf-dev, golang-github-golang-protobuf-1-5-dev,
# golang-google-grpc-dev and golang-google-genproto-dev (the Go client builds
# in GOPATH mode from /usr/share/gocode: no module proxy needed).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

languages=("$@")
if [ "${#languages[@]}" -eq 0 ]; then
    languages=(python go)
fi
for language in "${languages[@]}"; do
    case "$language" in
    python | go) ;;
    *)
        echo "error: unknown language $language (python, go)" >&2
        exit 2
        ;;
    esac
done

fail() {
    echo "error: $*" >&2
    exit 1
}

# Everything needed is checked before the server starts.
for language in "${languages[@]}"; do
    case "$language" in
    python)
        python3 -c 'import grpc, grpc_tools, google.api.field_behavior_pb2, google.type.dayofweek_pb2' ||
            fail "python3 needs grpcio, grpcio-tools and googleapis-common-protos (pip install them)"
        ;;
    go)
        for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
            command -v "$tool" >/dev/null || fail "$tool is missing (see the header of $0)"
        done
        for package in google.golang.org/grpc google.golang.org/protobuf \
            google.golang.org/genproto/googleapis/type/dayofweek github.com/golang/protobuf/proto; do
            [ -d "/usr/share/gocode/src/$package" ] ||
                fail "the Go package $package is missing from /usr/share/gocode (see the header of $0)"
        done
        ;;
    esac
done

if [ -z "${PUNCTUAL_BIN:-}" ]; then
    cargo build --quiet --bin punctual
    PUNCTUAL_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/punctual"
fi
[ -x "$PUNCTUAL_BIN" ] || fail "PUNCTUAL_BIN=$PUNCTUAL_BIN is not an executable"

work="$(mktemp -d)"
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
# Nothing listens there: no post of the quick starts falls due while they
# run, and publishing is not what they test.
publisher_port="$(free_port)"
server="127.0.0.1:$port"

echo "== punctual serve on $server (log: $work/server.log)"
RUST_LOG="${RUST_LOG:-warn}" "$PUNCTUAL_BIN" serve \
    --listen-addr "$server" \
    --database-url "sqlite://$work/punctual.db" \
    --publisher-url "http://127.0.0.1:$publisher_port/publish" \
    >"$work/server.log" 2>&1 &
server_pid=$!
for attempt in $(seq 1 60); do
    if "$PUNCTUAL_BIN" health-check --server "http://$server" --timeout 1s >/dev/null 2>&1; then
        break
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
        cat "$work/server.log" >&2
        fail "punctual serve exited before serving"
    fi
    if [ "$attempt" -eq 60 ]; then
        cat "$work/server.log" >&2
        fail "punctual serve is not SERVING after 30 s"
    fi
    sleep 0.5
done

on_failure() {
    echo "---- server log ----" >&2
    tail -n 50 "$work/server.log" >&2 || true
}

for language in "${languages[@]}"; do
    case "$language" in
    python)
        echo "== Python: generate with grpc_tools.protoc, run clients/python/quickstart.py --bulk"
        mkdir -p "$work/python"
        python3 -m grpc_tools.protoc -I proto \
            --python_out="$work/python" --grpc_python_out="$work/python" \
            punctual/v1/scheduler.proto
        PYTHONPATH="$work/python" python3 clients/python/quickstart.py --server "$server" --bulk ||
            {
                on_failure
                fail "the Python quick start failed"
            }
        ;;
    go)
        echo "== Go: generate with protoc-gen-go and protoc-gen-go-grpc, run clients/go"
        mkdir -p "$work/go/src"
        protoc -I proto --go_out="$work/go/src" --go-grpc_out="$work/go/src" \
            punctual/v1/scheduler.proto
        (
            cd clients/go
            GO111MODULE=off GOPATH="$work/go:/usr/share/gocode" GOFLAGS= \
                go build -o "$work/go/quickstart" .
        )
        "$work/go/quickstart" -server "$server" ||
            {
                on_failure
                fail "the Go quick start failed"
            }
        ;;
    esac
done

if ! kill -0 "$server_pid" 2>/dev/null; then
    on_failure
    fail "punctual serve died during the quick starts"
fi
echo "== quick starts passed: ${languages[*]}"
