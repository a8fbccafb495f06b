#!/usr/bin/env python3
"""Writes the Grafana dashboards (manifests/base/dashboards/*.json) from one readable description.

Every PromQL expression here is run against a real Prometheus scraping a local cluster under load by
tests/Sharding.EndToEnd.Tests/DashboardQueryTests.cs: each must parse and return data. Grafana's $__rate_interval and
$service are substituted there with 30s and the demo service.
"""
import json
import os

RATE = "$__rate_interval"
SVC = 'service=~"$service"'

OVERVIEW = [
    ("Requests by outcome", "reqps", [
        (f'sum by (outcome) (rate(sharding_sidecar_requests_total{{{SVC}}}[{RATE}]))', "{{outcome}}")]),
    ("Forwarded share", "percentunit", [
        (f'sum(rate(sharding_sidecar_requests_total{{{SVC},outcome="forwarded"}}[{RATE}])) / sum(rate(sharding_sidecar_requests_total{{{SVC}}}[{RATE}]))', "forwarded")]),
    ("Forward latency p50 / p99 by destination (local app vs peer sidecar)", "s", [
        (f'histogram_quantile(0.5, sum by (le, destination) (rate(sharding_sidecar_forward_duration_seconds_bucket{{{SVC}}}[{RATE}])))', "p50 {{destination}}"),
        (f'histogram_quantile(0.99, sum by (le, destination) (rate(sharding_sidecar_forward_duration_seconds_bucket{{{SVC}}}[{RATE}])))', "p99 {{destination}}")]),
    ("Errors (rejected, no key, loop prevented, owner unavailable, upstream errors)", "reqps", [
        (f'sum by (outcome) (rate(sharding_sidecar_requests_total{{{SVC},outcome!~"local|forwarded"}}[{RATE}])) or vector(0)', "{{outcome}}")]),
    ("Generation skew between sidecars", "short", [
        (f'max by (service) (sharding_sidecar_map_generation{{{SVC}}}) - min by (service) (sharding_sidecar_map_generation{{{SVC}}})', "{{service}}")]),
    ("Leader and failovers", "short", [
        ('sum(sharding_controlplane_leader)', "replicas leading"),
        ('max(sharding_controlplane_leader_epoch)', "leader epoch (grows with every failover)"),
        ('sum(sharding_controlplane_cut_off)', "followers cut off from the leader")]),
    ("Map publish latency p50 / p99", "s", [
        (f'histogram_quantile(0.5, sum by (le) (rate(sharding_controlplane_publish_duration_seconds_bucket[{RATE}])))', "p50"),
        (f'histogram_quantile(0.99, sum by (le) (rate(sharding_controlplane_publish_duration_seconds_bucket[{RATE}])))', "p99")]),
    ("Keys moved by the last change", "percentunit", [
        (f'max by (service) (sharding_controlplane_keys_moved_ratio{{{SVC}}})', "{{service}}")]),
    ("Streams drained", "short", [
        (f'sum by (reason, protocol) (increase(sharding_sidecar_streams_drained_total{{{SVC}}}[5m]))', "{{reason}} {{protocol}}"),
        (f'sum(increase(sharding_sidecar_goaways_sent_total{{{SVC}}}[5m]))', "GOAWAY sent")]),
    ("Subscribers and open streams", "short", [
        ('sum(sharding_controlplane_subscribers)', "control-plane subscribers"),
        (f'sum(sharding_sidecar_active_streams{{{SVC}}})', "requests in flight through sidecars")]),
]

SERVICE = [
    ("Requests per pod", "reqps", [
        (f'sum by (pod) (rate(sharding_sidecar_requests_total{{{SVC}}}[{RATE}]))', "{{pod}}")]),
    ("Local vs forwarded per pod", "reqps", [
        (f'sum by (pod, outcome) (rate(sharding_sidecar_requests_total{{{SVC},outcome=~"local|forwarded"}}[{RATE}]))', "{{pod}} {{outcome}}")]),
    ("Members", "short", [
        (f'max by (service) (sharding_controlplane_service_members{{{SVC}}})', "{{service}}")]),
    ("Generation per sidecar", "short", [
        (f'sharding_sidecar_map_generation{{{SVC}}}', "{{pod}}")]),
    ("Forward latency p99 per pod", "s", [
        (f'histogram_quantile(0.99, sum by (le, pod) (rate(sharding_sidecar_forward_duration_seconds_bucket{{{SVC}}}[{RATE}])))', "{{pod}}")]),
    ("Bytes through sidecars", "Bps", [
        (f'sum by (pod) (rate(sharding_sidecar_request_body_bytes_total{{{SVC}}}[{RATE}]))', "in {{pod}}"),
        (f'sum by (pod) (rate(sharding_sidecar_response_body_bytes_total{{{SVC}}}[{RATE}]))', "out {{pod}}")]),
    ("Circuit breakers (0 closed, 1 open, 2 half-open, 3 isolated)", "short", [
        (f'max by (owner) (sharding_sidecar_circuit_state{{{SVC}}})', "{{owner}}")]),
    ("Streams tracked by protocol", "short", [
        (f'sum by (protocol) (sharding_sidecar_streams_tracked{{{SVC}}})', "{{protocol}}")]),
    ("Time from new generation to last moved stream closed p99", "s", [
        (f'histogram_quantile(0.99, sum by (le) (rate(sharding_sidecar_drain_duration_seconds_bucket{{{SVC}}}[30m])))', "p99")]),
    ("Version-skew waits", "short", [
        (f'sum by (result) (increase(sharding_sidecar_skew_waits_total{{{SVC}}}[30m])) or vector(0)', "{{result}}")]),
    ("Sidecar CPU per pod (cores busy) and share of time in GC pauses", "short", [
        (f'sum by (pod) (rate(dotnet_process_cpu_time_seconds_total{{job="sharding-sidecars",{SVC}}}[{RATE}]))', "{{pod}} cores"),
        (f'sum by (pod) (rate(dotnet_gc_pause_time_seconds_total{{job="sharding-sidecars",{SVC}}}[{RATE}]))', "{{pod}} GC pause share")]),
    ("Sidecar memory (working set) per pod", "bytes", [
        (f'max by (pod) (dotnet_process_memory_working_set_bytes{{job="sharding-sidecars",{SVC}}})', "{{pod}}")]),
    ("Updates sent by the control plane (bytes, by kind)", "Bps", [
        (f'sum by (kind) (rate(sharding_controlplane_updates_sent_size_bytes_total[{RATE}]))', "{{kind}}")]),
    ("Sidecar event loops: sleeps and yields per second (Sidecar:IdleYields)", "short", [
        (f'sum by (pod) (rate(sharding_sidecar_event_loop_sleeps_total{{{SVC}}}[{RATE}]))', "{{pod}} sleeps"),
        (f'sum by (pod) (rate(sharding_sidecar_event_loop_yields_total{{{SVC}}}[{RATE}]))', "{{pod}} yields")]),
]


def dashboard(uid, title, panels):
    out = []
    for i, (panel_title, unit, targets) in enumerate(panels):
        out.append({
            "id": i + 1,
            "type": "timeseries",
            "title": panel_title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [
                {"refId": chr(ord("A") + j), "expr": expr, "legendFormat": legend,
                 "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                for j, (expr, legend) in enumerate(targets)
            ],
        })
    return {
        "uid": uid,
        "title": title,
        "tags": ["sharding"],
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
            {"name": "service", "type": "query", "label": "Service", "includeAll": True, "multi": True,
             "allValue": ".*", "current": {"text": "All", "value": "$__all"},
             "datasource": {"type": "prometheus", "uid": "${datasource}"},
             "query": {"query": "label_values(sharding_sidecar_map_generation, service)", "refId": "service"},
             "definition": "label_values(sharding_sidecar_map_generation, service)", "refresh": 2},
        ]},
        "panels": out,
    }


here = os.path.dirname(os.path.abspath(__file__))
target = os.path.join(here, "..", "..", "manifests", "base", "dashboards")
for name, uid, title, panels in [
    ("sharding-overview.json", "sharding-overview", "Sharding / Overview", OVERVIEW),
    ("sharding-service.json", "sharding-service", "Sharding / Service", SERVICE),
]:
    with open(os.path.join(target, name), "w", encoding="utf-8") as f:
        json.dump(dashboard(uid, title, panels), f, indent=2)
        f.write("\n")
print("wrote", target)
