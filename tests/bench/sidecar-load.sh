#!/usr/bin/env bash
# Load benchmark of the sidecar against the app directly, HAProxy and nginx, all on 127.0.0.1 (not a test).
#
#   tests/bench/sidecar-load.sh [SECONDS_PER_ROW]      (default 10)
#
# Starts (Release builds): two BenchApps (pod-0, pod-1), a sidecar beside each on one static map, HAProxy
# (balance hdr(x-shard-key) + hash-type consistent) and nginx (hash $http_x_shard_key consistent) in front of the same
# apps; then, in ROUNDS (default 3) interleaved rounds, runs wrk (HTTP/1.1) and h2load (HTTP/2 prior knowledge) for
# SECONDS_PER_ROW per row and prints the median req/s, p50 and p99 with each row's ratio to the direct row, the CPU the
# proxy processes spent per request, the targets' ratios, and an unloaded latency pass (wrk -c1). Everything it starts is
# killed at the end.
# Needs: dotnet, wrk, h2load (nghttp2-client), haproxy, nginx, curl, python3.
set -euo pipefail

DURATION="${1:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
H2_CONNECTIONS="${H2_CONNECTIONS:-4}"
H2_STREAMS="${H2_STREAMS:-8}"
THREADS="${THREADS:-1}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
WORK="$(mktemp -d /tmp/sharding-bench.XXXXXX)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
wait_port() { for _ in $(seq 1 200); do (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

echo "building Release into $WORK ..." >&2
dotnet build -c Release "$ROOT/sidecar/Sharding.Sidecar" -o "$WORK/sidecar" -v q -nologo >/dev/null
dotnet build -c Release "$ROOT/tests/bench/BenchApp" -o "$WORK/app" -v q -nologo >/dev/null

APP0=$(free_port); APP0H2=$(free_port); APP1=$(free_port); APP1H2=$(free_port)
SC0=$(free_port); SC1=$(free_port); ADM0=$(free_port); ADM1=$(free_port)
HAP=$(free_port); NGX=$(free_port); NGXH2=$(free_port)

"$WORK/app/BenchApp" pod-0 "$APP0" "$APP0H2" & PIDS+=($!)
"$WORK/app/BenchApp" pod-1 "$APP1" "$APP1H2" & PIDS+=($!)

# The map file sits in a directory of its own, as a ConfigMap volume would: the sidecar watches its directory.
mkdir -p "$WORK/map"
cat > "$WORK/map/map.yaml" <<YAML
service: bench
algorithm: maglev
members:
  - { name: pod-0, address: "127.0.0.1:$SC0" }
  - { name: pod-1, address: "127.0.0.1:$SC1" }
keys:
  rules: [ "header:x-shard-key" ]
YAML

# The sidecar image's environment (sidecar/Dockerfile sets the same gen0 budget).
SIDECAR_GEN0SIZE="$(sed -n 's/^ENV DOTNET_GCgen0size=//p' "$ROOT/sidecar/Dockerfile")"
start_sidecar() { # name port admin app
  Sidecar__PodName="$1" Sidecar__ListenAddress=127.0.0.1 Sidecar__AdminListenAddress=127.0.0.1 Sidecar__Port="$2" \
  Sidecar__AdminPort="$3" Sidecar__AppPort="$4" Sidecar__MapFile="$WORK/map/map.yaml" \
  Sidecar__ForwardingSecret="bench-secret-0123456789abcdef" Logging__LogLevel__Default=Warning \
  DOTNET_TieredPGO=1 DOTNET_GCgen0size="$SIDECAR_GEN0SIZE" "$WORK/sidecar/Sharding.Sidecar" > "$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}
start_sidecar pod-0 "$SC0" "$ADM0" "$APP0"; SC0PID=$!
start_sidecar pod-1 "$SC1" "$ADM1" "$APP1"; SC1PID=$!

cat > "$WORK/haproxy.cfg" <<CFG
global
  maxconn 4096
  nbthread 2
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend fe
  bind 127.0.0.1:$HAP
  default_backend apps
backend apps
  balance hdr(x-shard-key)
  hash-type consistent
  server pod-0 127.0.0.1:$APP0
  server pod-1 127.0.0.1:$APP1
CFG
haproxy -db -f "$WORK/haproxy.cfg" > "$WORK/haproxy.log" 2>&1 & PIDS+=($!); HAPPID=$!

mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CFG
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  http2_max_requests 10000000;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  upstream apps {
    hash \$http_x_shard_key consistent;
    server 127.0.0.1:$APP0;
    server 127.0.0.1:$APP1;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGX;
    listen 127.0.0.1:$NGXH2 http2;
    location / {
      proxy_pass http://apps;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CFG
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" > "$WORK/nginx.log" 2>&1 & PIDS+=($!); NGXPID=$!

for p in $APP0 $APP0H2 $APP1 $APP1H2 $SC0 $SC1 $HAP $NGX $NGXH2; do wait_port "$p"; done
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$ADM0/readyz" >/dev/null && curl -fs "http://127.0.0.1:$ADM1/readyz" >/dev/null && break; sleep 0.1; done

# A key each pod owns, asked of the sidecar itself (x-sharding-owner).
owner_of() { curl -s -o /dev/null -D - -H "x-shard-key: $1" "http://127.0.0.1:$SC0/" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-sharding-owner"{print $2}'; }
KEY0=""; KEY1=""
for i in $(seq 1 200); do
  o=$(owner_of "bench-$i")
  [[ -z "$KEY0" && "$o" == pod-0 ]] && KEY0="bench-$i"
  [[ -z "$KEY1" && "$o" == pod-1 ]] && KEY1="bench-$i"
  [[ -n "$KEY0" && -n "$KEY1" ]] && break
done
# HAProxy and nginx hash differently: use, for them, the key whichever pod it lands on (one hop either way).
echo "key owned by pod-0: $KEY0, by pod-1: $KEY1" >&2

run_wrk() { # url key -> "rps p50ms p99ms"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "x-shard-key: $2" "$1" > "$WORK/wrk.out" 2>&1 || true
  python3 - "$WORK/wrk.out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", v)
    if not m:
        raise ValueError(v)
    n, u = float(m.group(1)), m.group(2)
    return {"us": n / 1000, "ms": n, "s": n * 1000, "m": n * 60000}[u]
try:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    # Anchored to the line start: the latency stdev column can end in "50%" or "99%" too.
    p50 = ms(re.search(r"^\s*50%\s+(\S+)", text, re.M).group(1)); p99 = ms(re.search(r"^\s*99%\s+(\S+)", text, re.M).group(1))
except Exception as e:
    sys.stderr.write(f"cannot parse wrk output ({e}):\n{text}\n")
    rps = p50 = p99 = 0.0
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {errors.group(1) if errors else 0}")
PY
}

run_h2load() { # url key -> "rps p50ms p99ms"
  rm -f "$WORK/h2.log"
  h2load -D "$DURATION" -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -t "$THREADS" -H "x-shard-key: $2" --log-file="$WORK/h2.log" "$1" > "$WORK/h2.out" 2>&1 || true
  python3 - "$WORK/h2.out" "$WORK/h2.log" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", text).group(1))
durations = sorted(int(line.split()[2]) for line in open(sys.argv[2]) if line.strip())
pick = lambda q: durations[min(len(durations) - 1, int(q * len(durations)))] / 1000.0
bad = len([1 for line in open(sys.argv[2]) if line.split()[1] != "200"])
print(f"{rps:.0f} {pick(0.5):.3f} {pick(0.99):.3f} {bad}")
PY
}

# CPU time (user + system, clock ticks) of the given processes and their threads: counts are steadier than times on a
# shared machine, so every cell also reports what the proxy processes spent per request.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
ticks() { local t=0 p; for p in "$@"; do [[ -r /proc/$p/stat ]] && t=$((t + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}'))); done; echo "$t"; }
with_cpu() { # "proxy pids" command... -> the command's "rps p50 p99 bad" plus the pids' CPU microseconds per request
  local pids=$1 before after cell; shift
  before=$(ticks $pids); cell=$("$@"); after=$(ticks $pids)
  echo "$cell $(python3 -c "import sys; r = float(sys.argv[1]) * float(sys.argv[2]); print(f'{(int(sys.argv[4]) - int(sys.argv[3])) * int(sys.argv[5]) / r if r else 0:.1f}')" \
    "${cell%% *}" "$DURATION" "$before" "$after" "$TICK_US")"
}

declare -A RESULT
ROUNDS="${ROUNDS:-3}"
measure() { # name h1url h2url key -> appends one round's cells
  local pids=${PROXY_PIDS["$1"]}
  RESULT["$1,h1"]+="$(with_cpu "$pids" run_wrk "$2" "$4");"
  RESULT["$1,h2"]+="$(with_cpu "$pids" run_h2load "$3" "$4");"
}
ROWS=("app direct" "sidecar, owned" "sidecar, forwarded" "haproxy" "nginx")
declare -A H1URL=(["app direct"]="http://127.0.0.1:$APP0/" ["sidecar, owned"]="http://127.0.0.1:$SC0/" ["sidecar, forwarded"]="http://127.0.0.1:$SC0/"
                  ["haproxy"]="http://127.0.0.1:$HAP/" ["nginx"]="http://127.0.0.1:$NGX/")
declare -A H2URL=(["app direct"]="http://127.0.0.1:$APP0H2/" ["sidecar, owned"]="http://127.0.0.1:$SC0/" ["sidecar, forwarded"]="http://127.0.0.1:$SC0/"
                  ["haproxy"]="http://127.0.0.1:$HAP/" ["nginx"]="http://127.0.0.1:$NGXH2/")
NGINX_WORKERS=$(pgrep -P "$NGXPID" | tr '\n' ' ')
declare -A PROXY_PIDS=(["app direct"]="" ["sidecar, owned"]="$SC0PID $SC1PID" ["sidecar, forwarded"]="$SC0PID $SC1PID" ["haproxy"]="$HAPPID"
                       ["nginx"]="$NGXPID $NGINX_WORKERS")
declare -A ROWKEY=(["app direct"]="$KEY0" ["sidecar, owned"]="$KEY0" ["sidecar, forwarded"]="$KEY1" ["haproxy"]="$KEY0" ["nginx"]="$KEY0")

# Warm up every path once (JIT tiering, connection pools) without measuring.
for r in "${ROWS[@]}"; do
  wrk -t1 -c"$CONNECTIONS" -d2s -H "x-shard-key: ${ROWKEY[$r]}" "${H1URL[$r]}" >/dev/null 2>&1 || true
  h2load -D 2 -c "$H2_CONNECTIONS" -m "$H2_STREAMS" -H "x-shard-key: ${ROWKEY[$r]}" "${H2URL[$r]}" >/dev/null 2>&1 || true
done

# Rounds interleave the rows, so a noisy minute on a shared machine hits every row alike; each cell is the median round.
for round in $(seq 1 "$ROUNDS"); do
  for r in "${ROWS[@]}"; do measure "$r" "${H1URL[$r]}" "${H2URL[$r]}" "${ROWKEY[$r]}"; done
  echo "round $round of $ROUNDS done" >&2
done

# Unloaded latency: one connection, one request at a time (what a hop adds when nothing queues).
declare -A IDLE
for r in "app direct" "sidecar, owned" "sidecar, forwarded" "nginx"; do
  wrk -t1 -c1 -d"$DURATION"s --latency -H "x-shard-key: ${ROWKEY[$r]}" "${H1URL[$r]}" > "$WORK/wrk1.out" 2>&1 || true
  IDLE["$r"]=$(python3 -c '
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"^\s*50%\s+([\d.]+)(us|ms|s)$", t, re.M)
print(float(m.group(1)) * {"us": 1, "ms": 1000, "s": 1e6}[m.group(2)] if m else 0)' "$WORK/wrk1.out")
done

python3 - "$DURATION" "$CONNECTIONS" "$H2_CONNECTIONS" "$H2_STREAMS" "$ROUNDS" <<PY
import statistics, sys
rows = ["app direct", "sidecar, owned", "sidecar, forwarded", "haproxy", "nginx"]
data = {
$(for r in "${ROWS[@]}"; do for p in h1 h2; do echo "  (\"$r\", \"$p\"): \"${RESULT["$r,$p"]}\","; done; done)
}
idle = {
$(for r in "app direct" "sidecar, owned" "sidecar, forwarded" "nginx"; do echo "  \"$r\": ${IDLE["$r"]:-0},"; done)
}
d, c, hc, hm, rounds = sys.argv[1:]
def rounds_of(r, proto):
    return [[float(x) for x in run.split()] for run in data[(r, proto)].split(";") if run.strip()]
def cell(r, proto):
    return [statistics.median(col) for col in zip(*rounds_of(r, proto))]
print(f"\n{d} s per cell, median of {rounds} interleaved rounds; HTTP/1.1: wrk -c{c}; HTTP/2: h2load -c{hc} -m{hm} (prior knowledge); 127.0.0.1; ratios vs. app direct\n")
print("| path | proto | req/s | ×direct | p50 ms | p99 ms | p99 ×direct | non-2xx | proxy CPU µs/req |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
cells = {}
for proto, label in (("h1", "HTTP/1.1"), ("h2", "HTTP/2")):
    base = [max(x, 1e-9) for x in cell("app direct", proto)]
    for r in rows:
        rps, p50, p99, bad, cpu = cells[(r, proto)] = cell(r, proto)
        cpu_text = "–" if r == "app direct" else f"{cpu:.1f}"
        print(f"| {r} | {label} | {rps:,.0f} | {rps / base[0]:.2f} | {p50:.2f} | {p99:.2f} | {p99 / base[2]:.2f} | {int(bad)} | {cpu_text} |")
def spread(values):
    return "per round " + ", ".join(f"{v:.2f}" for v in values)
print("\nTargets (same run; the medians above, then the same ratio within each round, whose rows ran minutes apart at most):")
for proto, label in (("h1", "HTTP/1.1"), ("h2", "HTTP/2")):
    owned, nginx, direct, fwd = cells[("sidecar, owned", proto)], cells[("nginx", proto)], cells[("app direct", proto)], cells[("sidecar, forwarded", proto)]
    added_owned, added_fwd = owned[1] - direct[1], fwd[1] - direct[1]
    per = list(zip(rounds_of("app direct", proto), rounds_of("sidecar, owned", proto), rounds_of("sidecar, forwarded", proto), rounds_of("nginx", proto)))
    rps_ratio = [o[0] / max(n[0], 1e-9) for _, o, _, n in per]
    p99_ratio = [n[2] / max(o[2], 1e-9) for _, o, _, n in per]
    fwd_ratio = [(f[1] - d[1]) / max(o[1] - d[1], 1e-9) for d, o, f, _ in per]
    print(f"* {label}: owned/nginx req/s {owned[0] / max(nginx[0], 1e-9):.2f}x ({spread(rps_ratio)}); "
          f"nginx p99 / owned p99 {nginx[2] / max(owned[2], 1e-9):.2f}x ({spread(p99_ratio)}) (>= 1 is as good); "
          f"under load, forwarded added p50 {added_fwd:.2f} ms = {added_fwd / max(added_owned, 1e-9):.2f}x owned's {added_owned:.2f} ms ({spread(fwd_ratio)})")
    cpu_nginx = [n[4] / max(o[4], 1e-9) for _, o, _, n in per]
    cpu_fwd = [f[4] / max(o[4], 1e-9) for _, o, f, _ in per]
    print(f"  CPU per request (user + system of the proxy processes): sidecar owned {owned[4]:.1f} us, nginx {nginx[4]:.1f} us "
          f"(nginx / owned {nginx[4] / max(owned[4], 1e-9):.2f}x, {spread(cpu_nginx)}); forwarded, both sidecars, {fwd[4]:.1f} us "
          f"= {fwd[4] / max(owned[4], 1e-9):.2f}x owned ({spread(cpu_fwd)})")
a_o, a_f = idle["sidecar, owned"] - idle["app direct"], idle["sidecar, forwarded"] - idle["app direct"]
print(f"* HTTP/1.1 unloaded (wrk -c1, p50): direct {idle['app direct']:.0f} us, owned {idle['sidecar, owned']:.0f} us, forwarded {idle['sidecar, forwarded']:.0f} us, "
      f"nginx {idle['nginx']:.0f} us; forwarded adds {a_f:.0f} us = {a_f / max(a_o, 1e-9):.2f}x owned's {a_o:.0f} us")
PY
