#!/usr/bin/env bash
# Client-side routing benchmark (issue 8): req/s and p50/p99 through ShardRoutingHandler (straight to owners) vs through a
# random sidecar (forwarded when not owned), in one run on 127.0.0.1. Not a test. Usage:
#   tests/bench/client-vs-sidecar.sh [--requests 10000] [--concurrency 32] [--rounds 6]
set -euo pipefail
cd "$(dirname "$0")/../.."
dotnet build -c Release tests/Sharding.Client.Bench -v q -nologo
exec dotnet tests/Sharding.Client.Bench/bin/Release/net10.0/Sharding.Client.Bench.dll "$@"
