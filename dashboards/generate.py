#!/usr/bin/env python3
"""Generates the Grafana dashboards in this folder (run it after changing a panel; the
JSON files are what Grafana loads and what tests/tests/metrics.rs checks)."""
import json, os
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
OUT = os.path.dirname(os.path.abspath(__file__))

def var_ds():
    return {"name": "DS_PROMETHEUS", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "includeAll": False, "multi": False, "options": [], "skipUrlSync": False}

def var_q(name, label, q):
    return {"name": name, "label": label, "type": "query", "datasource": DS,
            "definition": q,
            "query": {"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1, "regex": "", "hide": 0, "options": [], "skipUrlSync": False}

class Dash:
    def __init__(self, uid, title, desc, tags, variables):
        self.uid, self.title, self.desc, self.tags, self.variables = uid, title, desc, tags, variables
        self.panels = []; self.nid = 1; self.y = 0; self.x = 0; self.rowh = 0
    def row(self, title):
        if self.x: self.y += self.rowh; self.x = 0
        self.panels.append({"id": self.nid, "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.nid += 1; self.y += 1; self.rowh = 0
    def panel(self, title, desc, targets, unit="short", kind="timeseries", w=8, h=8, stack=False, mn=None):
        if self.x + w > 24: self.y += self.rowh; self.x = 0; self.rowh = 0
        tg = []
        for i, t in enumerate(targets):
            expr, legend = t
            tg.append({"refId": chr(65 + i), "datasource": DS, "expr": expr,
                       "legendFormat": legend, "range": True, "instant": False,
                       "editorMode": "code"})
        defaults = {"unit": unit}
        if mn is not None: defaults["min"] = mn
        if kind == "timeseries":
            defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                                  "showPoints": "never", "spanNulls": False,
                                  "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
            options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                       "tooltip": {"mode": "multi", "sort": "desc"}}
        else:
            options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                       "colorMode": "value", "graphMode": "area", "textMode": "auto",
                       "justifyMode": "auto", "orientation": "auto"}
        self.panels.append({"id": self.nid, "type": kind, "title": title, "description": desc,
                            "datasource": DS, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
                            "targets": tg, "fieldConfig": {"defaults": defaults, "overrides": []},
                            "options": options})
        self.nid += 1; self.x += w; self.rowh = max(self.rowh, h)
    links = []
    def write(self, fname):
        d = {"uid": self.uid, "title": self.title, "description": self.desc, "tags": self.tags,
             "schemaVersion": 39, "version": 1, "editable": True, "graphTooltip": 1,
             "time": {"from": "now-6h", "to": "now"}, "refresh": "30s", "timezone": "",
             "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
             "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                       "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                       "name": "Annotations & Alerts", "type": "dashboard"}]},
             "links": [{"title": "Logarithm", "type": "dashboards", "tags": ["logarithm"],
                        "asDropdown": True, "includeVars": True, "keepTime": True}] + self.links,
             "templating": {"list": self.variables}, "panels": self.panels}
        with open(os.path.join(OUT, fname), "w") as f:
            json.dump(d, f, indent=2); f.write("\n")

I = 'instance=~"$instance"'
N = 'node=~"$node"'
def std_vars(agent_first=False):
    if agent_first:
        return [var_ds(), var_q("node", "Node", "label_values(antilog_build_info, node)"),
                var_q("instance", "Agent instance", 'label_values(antilog_build_info{node=~"$node"}, instance)')]
    return [var_ds(), var_q("instance", "logarithmd instance", "label_values(logarithmd_build_info, instance)"),
            var_q("node", "Node", "label_values(antilog_build_info, node)")]
RI = "$__rate_interval"
def q(p, metric, sel, by="le"):
    return f'histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{{{sel}}}[{RI}])))'

# ---------------- overview ----------------
d = Dash("logarithm-overview", "Logarithm overview",
         "The whole pipeline: throughput, latency, errors and backlog of logarithmd and its agents.",
         ["logarithm"], std_vars())
d.row("Health")
d.panel("logarithmd instances reporting", "Selected logarithmd instances whose metrics were scraped.",
        [(f'count(logarithmd_build_info{{{I}}})', "instances")], kind="stat", w=6, h=4)
d.panel("Agents reporting", "Agents (antilog) on the selected nodes whose metrics were scraped.",
        [(f'count(antilog_build_info{{{N}}})', "agents")], kind="stat", w=6, h=4)
d.panel("Jobs finished", "Jobs that reached a final status in the selected time range.",
        [(f'sum(increase(logarithmd_jobs_finished_total{{{I}}}[$__range]))', "jobs")], kind="stat", w=6, h=4)
d.panel("Storage write errors", "Failed storage writes in the selected time range.",
        [(f'sum(increase(logarithmd_storage_write_errors_total{{{I}}}[$__range]))', "errors")], kind="stat", w=6, h=4)
d.row("Throughput")
d.panel("Lines stored /s", "Log records newly stored by logarithmd (logarithmd_ingest_lines_total) and resent duplicates.",
        [(f'sum(rate(logarithmd_ingest_lines_total{{{I}}}[{RI}]))', "stored"),
         (f'sum(rate(logarithmd_ingest_duplicate_lines_total{{{I}}}[{RI}]))', "duplicates")], unit="short")
d.panel("Bytes ingested /s", "Log line bytes in committed batches, and request bytes as received (compressed).",
        [(f'sum(rate(logarithmd_ingest_bytes_total{{{I}}}[{RI}]))', "line bytes"),
         (f'sum(rate(logarithmd_ingest_request_bytes_total{{{I}}}[{RI}]))', "request bytes (compressed)")], unit="Bps")
d.panel("Lines read by agents /s", "Records the agents read from Docker, by stream.",
        [(f'sum by (stream) (rate(antilog_lines_read_total{{{N}}}[{RI}]))', "{{stream}}")])
d.panel("Ingest requests /s by status", "Ingest answers by HTTP status (200 committed, 503 overloaded: agents retry).",
        [(f'sum by (status) (rate(logarithmd_ingest_requests_total{{{I}}}[{RI}]))', "{{status}}")], unit="reqps")
d.panel("HTTP requests /s by route", "All HTTP requests by matched route.",
        [(f'sum by (route) (rate(logarithmd_http_requests_total{{{I}}}[{RI}]))', "{{route}}")], unit="reqps")
d.panel("Batch size", "Records per committed ingest batch (median and 99th percentile).",
        [(q(0.5, "logarithmd_ingest_batch_records", I), "p50"),
         (q(0.99, "logarithmd_ingest_batch_records", I), "p99")])
d.row("Latency")
d.panel("Ingest to committed", "Time from an ingest request's arrival to its batch being committed.",
        [(q(0.5, "logarithmd_ingest_commit_latency_seconds", I), "p50"),
         (q(0.99, "logarithmd_ingest_commit_latency_seconds", I), "p99")], unit="s")
d.panel("Storage write duration", "Time one storage transaction (one batch) took.",
        [(q(0.5, "logarithmd_storage_write_duration_seconds", I), "p50"),
         (q(0.99, "logarithmd_storage_write_duration_seconds", I), "p99")], unit="s")
d.panel("Agent ship latency", "Time from a batch being handed to an agent's shipper to its acknowledgement, retries included.",
        [(q(0.5, "antilog_ship_duration_seconds", N), "p50"),
         (q(0.99, "antilog_ship_duration_seconds", N), "p99")], unit="s")
d.panel("HTTP p99 by route", "99th percentile of HTTP request duration by matched route.",
        [(q(0.99, "logarithmd_http_request_duration_seconds", I, "le, route"), "{{route}}")], unit="s", w=24)
d.row("Errors")
d.panel("Ingest rejections /s", "Ingest requests not answered 200, by status.",
        [(f'sum by (status) (rate(logarithmd_ingest_requests_total{{{I}, status!="200"}}[{RI}]))', "{{status}}")], unit="reqps", w=6)
d.panel("Storage write errors /s", "Failed storage writes by error kind.",
        [(f'sum by (kind) (rate(logarithmd_storage_write_errors_total{{{I}}}[{RI}]))', "{{kind}}")], unit="ops", w=6)
d.panel("Agent delivery failures /s", "Failed batch delivery attempts by reason (each is retried).",
        [(f'sum by (reason) (rate(antilog_batches_failed_total{{{N}}}[{RI}]))', "{{reason}}")], unit="ops", w=6)
d.panel("Docker API errors /s", "Failed Docker API calls of the agents, by kind.",
        [(f'sum by (kind) (rate(antilog_docker_errors_total{{{N}}}[{RI}]))', "{{kind}}")], unit="ops", w=6)
d.row("Backlog")
d.panel("Ingest queue", "Batches waiting for a storage writer, and batches being written.",
        [(f'sum(logarithmd_ingest_queue_depth{{{I}}})', "waiting"),
         (f'sum(logarithmd_ingest_in_flight{{{I}}})', "writing")], w=6)
d.panel("Checkpoint lag", "Per node: how far behind the newest acknowledged line is (0 when everything read is acknowledged).",
        [(f'max by (node) (antilog_checkpoint_lag_seconds{{{N}}})', "{{node}}")], unit="s", w=6)
d.panel("Spool", "Bytes spooled on disk by the agents, waiting for delivery.",
        [(f'sum by (node) (antilog_spool_bytes{{{N}}})', "{{node}}")], unit="bytes", w=6)
d.panel("Webhooks pending", "Webhook notifications waiting to be delivered.",
        [(f'sum(logarithmd_webhook_pending_deliveries{{{I}}})', "pending")], w=6)
d.row("Ordered ingest")
d.panel("Batches waiting for their predecessors", "Ordered ingest: batches decoded and waiting for the batches of their container they follow (then for a writer), and their decoded bytes (bounded by ingest_order_waiting_bytes).",
        [(f'sum(logarithmd_ingest_order_waiting{{{I}}})', "batches")], w=8)
d.panel("Bytes waiting for their predecessors", "Decoded bytes of the batches waiting; at ingest_order_waiting_bytes, more are refused with 503.",
        [(f'sum by (instance) (logarithmd_ingest_order_waiting_bytes{{{I}}})', "{{instance}}")], unit="bytes", w=8)
d.panel("Ordered batches refused /s", "Batches answered 503 + Retry-After because the waiting ones filled ingest_order_waiting_bytes (agents resend them; also counted in the ingest 503s).",
        [(f'sum by (instance) (rate(logarithmd_ingest_order_refused_total{{{I}}}[{RI}]))', "{{instance}}")], unit="reqps", w=8)
d.row("Retention")
d.panel("Rows deleted by retention", "Rows the retention sweeper deleted in the selected time range, by kind ([retention] in logarithmd's configuration).",
        [(f'sum by (kind) (increase(logarithmd_retention_deleted_total{{{I}}}[$__range]))', "{{kind}}")], w=12)
d.panel("Retention sweeps", "Retention sweeps in the selected time range, by result (error: see logarithmd's log; the next sweep finishes the work).",
        [(f'sum by (result) (increase(logarithmd_retention_sweeps_total{{{I}}}[$__range]))', "{{result}}")], w=12)
d.write("logarithm-overview.json")

# ---------------- agents ----------------
IA = 'node=~"$node", instance=~"$instance"'
d = Dash("logarithm-agents", "Logarithm agents",
         "Each antilog node agent: what it reads from Docker, what it ships, and what is left behind.",
         ["logarithm"], std_vars(agent_first=True))
d.row("Reading")
d.panel("Containers followed", "Containers whose logs each agent follows now.",
        [(f'sum by (node) (antilog_containers_followed{{{IA}}})', "{{node}}")], w=8)
d.panel("Lines read /s", "Records read from Docker per node and stream.",
        [(f'sum by (node, stream) (rate(antilog_lines_read_total{{{IA}}}[{RI}]))', "{{node}} {{stream}}")], w=8)
d.panel("Bytes read /s", "Bytes of log lines read from Docker per node and stream.",
        [(f'sum by (node, stream) (rate(antilog_bytes_read_total{{{IA}}}[{RI}]))', "{{node}} {{stream}}")], unit="Bps", w=8)
d.panel("Reading paused", "1 while an agent has stopped reading Docker because delivery is behind (backpressure).",
        [(f'max by (node) (antilog_reading_paused{{{IA}}})', "{{node}}")], w=8, mn=0)
d.panel("Docker API errors /s", "Failed Docker API calls per node and kind.",
        [(f'sum by (node, kind) (rate(antilog_docker_errors_total{{{IA}}}[{RI}]))', "{{node}} {{kind}}")], unit="ops", w=16)
d.row("Shipping")
d.panel("Batches shipped /s", "Batches acknowledged by logarithmd per node.",
        [(f'sum by (node) (rate(antilog_batches_shipped_total{{{IA}}}[{RI}]))', "{{node}}")], unit="ops", w=8)
d.panel("Records shipped /s", "Records acknowledged by logarithmd per node.",
        [(f'sum by (node) (rate(antilog_records_shipped_total{{{IA}}}[{RI}]))', "{{node}}")], w=8)
d.panel("Delivery failures /s", "Failed delivery attempts per node and reason (retried).",
        [(f'sum by (node, reason) (rate(antilog_batches_failed_total{{{IA}}}[{RI}]))', "{{node}} {{reason}}")], unit="ops", w=8)
d.panel("Ship latency p99", "99th percentile of batch hand-off to acknowledgement, per node.",
        [(q(0.99, "antilog_ship_duration_seconds", IA, "le, node"), "{{node}}")], unit="s", w=12)
d.panel("Ship latency p50", "Median of batch hand-off to acknowledgement, per node.",
        [(q(0.5, "antilog_ship_duration_seconds", IA, "le, node"), "{{node}}")], unit="s", w=12)
d.row("Backlog")
d.panel("Checkpoint lag", "Now minus the newest acknowledged line's timestamp while lines are unacknowledged; 0 when caught up.",
        [(f'max by (node) (antilog_checkpoint_lag_seconds{{{IA}}})', "{{node}}")], unit="s", w=8)
d.panel("Spool bytes", "Bytes in the on-disk spool per node (0 without a spool).",
        [(f'sum by (node) (antilog_spool_bytes{{{IA}}})', "{{node}}")], unit="bytes", w=8)
d.panel("Spool segments", "Files in the on-disk spool per node.",
        [(f'sum by (node) (antilog_spool_segments{{{IA}}})', "{{node}}")], w=8)
d.write("logarithm-agents.json")

# ---------------- jobs ----------------
d = Dash("logarithm-jobs", "Logarithm jobs",
         "Job (container run) results: how many finish, how many fail, how long they take.",
         ["logarithm"], std_vars())
d.row("Results")
d.panel("Jobs finished in range", "Jobs that reached a final status in the selected time range, by result.",
        [(f'sum by (result) (increase(logarithmd_jobs_finished_total{{{I}}}[$__range]))', "{{result}}")], kind="stat", w=8, h=6)
d.panel("Failure rate in range", "Share of finished jobs that failed in the selected time range.",
        [(f'sum(increase(logarithmd_jobs_finished_total{{{I}, result="failure"}}[$__range])) / sum(increase(logarithmd_jobs_finished_total{{{I}}}[$__range]))', "failure rate")],
        kind="stat", unit="percentunit", w=8, h=6)
d.panel("Jobs running on nodes", "Containers the agents on the selected nodes follow now.",
        [(f'sum(antilog_containers_followed{{{N}}})', "followed")], kind="stat", w=8, h=6)
d.panel("Jobs finished by result", "Jobs finished per interval, by result.",
        [(f'sum by (result) (increase(logarithmd_jobs_finished_total{{{I}}}[$__interval]))', "{{result}}")], w=12, stack=True)
d.panel("Failure rate", "Share of finished jobs that failed, over a sliding window.",
        [(f'sum(rate(logarithmd_jobs_finished_total{{{I}, result="failure"}}[{RI}])) / sum(rate(logarithmd_jobs_finished_total{{{I}}}[{RI}]))', "failure rate")],
        unit="percentunit", w=12, mn=0)
d.panel("Jobs started /s", "New jobs and restarts.",
        [(f'sum(rate(logarithmd_jobs_started_total{{{I}}}[{RI}]))', "started")], unit="ops", w=12)
d.panel("COUT outputs parsed /s", "`[COUT] KEY = VALUE` lines parsed, by kind (co_result is the verdict line).",
        [(f'sum by (kind) (rate(logarithmd_cout_outputs_total{{{I}}}[{RI}]))', "{{kind}}")], unit="ops", w=12)
d.row("Durations")
d.panel("Job duration by result (p50)", "Median run time of finished jobs.",
        [(q(0.5, "logarithmd_job_duration_seconds", I, "le, result"), "{{result}}")], unit="s", w=8)
d.panel("Job duration by result (p90)", "90th percentile run time of finished jobs.",
        [(q(0.9, "logarithmd_job_duration_seconds", I, "le, result"), "{{result}}")], unit="s", w=8)
d.panel("Mean job duration", "Mean run time of finished jobs, by result.",
        [(f'sum by (result) (rate(logarithmd_job_duration_seconds_sum{{{I}}}[{RI}])) / sum by (result) (rate(logarithmd_job_duration_seconds_count{{{I}}}[{RI}]))', "{{result}}")], unit="s", w=8)
d.links = [{"title": "Job logs", "type": "link", "icon": "doc", "tooltip": "Logs of the jobs (Loki data source on logarithmd)",
            "url": "/d/logarithm-job-logs/logarithm-job-logs", "keepTime": True, "includeVars": False,
            "asDropdown": False, "targetBlank": False, "tags": []}]
d.write("logarithm-jobs.json")

# ---------------- webhooks ----------------
d = Dash("logarithm-webhooks", "Logarithm webhooks",
         "Webhook notifications of job results: deliveries, failures, latency and backlog.",
         ["logarithm"], std_vars())
d.row("Deliveries")
d.panel("Delivered in range", "Webhook attempts answered 2xx in the selected time range.",
        [(f'sum(increase(logarithmd_webhook_deliveries_total{{{I}, outcome="delivered"}}[$__range]))', "delivered")], kind="stat", w=6, h=5)
d.panel("Dropped in range", "Webhook notifications given up on (no retry left) in the selected time range.",
        [(f'sum(increase(logarithmd_webhook_deliveries_total{{{I}, outcome="failed"}}[$__range]))', "failed")], kind="stat", w=6, h=5)
d.panel("Pending", "Webhook notifications waiting to be delivered now.",
        [(f'sum(logarithmd_webhook_pending_deliveries{{{I}}})', "pending")], kind="stat", w=6, h=5)
d.panel("Agents reporting", "Agents on the selected nodes (the jobs they follow are what webhooks report).",
        [(f'count(antilog_build_info{{{N}}})', "agents")], kind="stat", w=6, h=5)
d.panel("Delivery attempts /s by outcome", "delivered: 2xx; retrying: failed, will retry; failed: dropped.",
        [(f'sum by (outcome) (rate(logarithmd_webhook_deliveries_total{{{I}}}[{RI}]))', "{{outcome}}")], unit="ops", w=12)
d.panel("Failed attempt ratio", "Share of delivery attempts that did not get a 2xx.",
        [(f'sum(rate(logarithmd_webhook_deliveries_total{{{I}, outcome!="delivered"}}[{RI}])) / sum(rate(logarithmd_webhook_deliveries_total{{{I}}}[{RI}]))', "failed ratio")],
        unit="percentunit", w=12, mn=0)
d.row("Latency and backlog")
d.panel("Delivery latency", "Time one delivery attempt took.",
        [(q(0.5, "logarithmd_webhook_delivery_duration_seconds", I), "p50"),
         (q(0.99, "logarithmd_webhook_delivery_duration_seconds", I), "p99")], unit="s", w=8)
d.panel("Pending deliveries", "Notifications queued or between retries.",
        [(f'sum by (instance) (logarithmd_webhook_pending_deliveries{{{I}}})', "{{instance}}")], w=8)
d.panel("Jobs finished /s", "Finished jobs: the events webhooks report.",
        [(f'sum by (result) (rate(logarithmd_jobs_finished_total{{{I}}}[{RI}]))', "{{result}}")], unit="ops", w=8)
d.write("logarithm-webhooks.json")

# ---------------- job logs (Loki data source: logarithmd's /loki/api/v1) ----------------
LOKI = {"type": "loki", "uid": "${DS_LOKI}"}
def var_loki_ds():
    return {"name": "DS_LOKI", "label": "Logs data source", "type": "datasource",
            "query": "loki", "current": {}, "hide": 0, "refresh": 1, "regex": "",
            "includeAll": False, "multi": False, "options": [], "skipUrlSync": False}
def var_loki(name, label, q):
    # Grafana's Loki variable query: label_values([selector,] label); "All" is .+ so the
    # selector stays a valid LogQL matcher.
    return {"name": name, "label": label, "type": "query", "datasource": LOKI, "definition": q,
            "query": {"query": q, "refId": "LokiVariableQueryEditor-VariableQuery"},
            "refresh": 2, "multi": True, "includeAll": True, "allValue": ".+",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1, "regex": "", "hide": 0, "options": [], "skipUrlSync": False}
SEL = 'flow=~"$flow", run=~"$run", job=~"$job"'
d = Dash("logarithm-job-logs", "Logarithm job logs",
         "Log lines of flow jobs, read from logarithmd through its Loki-compatible API. Pick a flow, run and job.",
         ["logarithm"],
         [var_loki_ds(),
          var_loki("flow", "Flow", "label_values(flow)"),
          var_loki("run", "Run", 'label_values({flow=~"$flow"}, run)'),
          var_loki("job", "Job", 'label_values({flow=~"$flow", run=~"$run"}, job)'),
          {"name": "search", "label": "Line contains", "type": "textbox", "query": "",
           "current": {"text": "", "value": ""}, "hide": 0, "options": [], "skipUrlSync": False}])
d.panels.append({"id": 1, "type": "logs", "title": "Job logs",
                 "description": "Every stored line of the selected jobs (stdout and stderr), newest first; filter with \"Line contains\".",
                 "datasource": LOKI, "gridPos": {"h": 22, "w": 24, "x": 0, "y": 0},
                 "targets": [{"refId": "A", "datasource": LOKI, "expr": "{" + SEL + '} |= "$search"',
                              "queryType": "range", "editorMode": "code", "maxLines": 1000}],
                 "options": {"showTime": True, "showLabels": False, "showCommonLabels": False,
                             "wrapLogMessage": True, "prettifyLogMessage": False,
                             "enableLogDetails": True, "dedupStrategy": "none",
                             "sortOrder": "Descending"}})
d.panels.append({"id": 2, "type": "logs", "title": "Errors",
                 "description": "Lines of the selected jobs that mention error or fail (any case).",
                 "datasource": LOKI, "gridPos": {"h": 10, "w": 24, "x": 0, "y": 22},
                 "targets": [{"refId": "A", "datasource": LOKI,
                              "expr": "{" + SEL + '} |~ "(?i)error|fail"',
                              "queryType": "range", "editorMode": "code", "maxLines": 1000}],
                 "options": {"showTime": True, "showLabels": True, "showCommonLabels": False,
                             "wrapLogMessage": True, "prettifyLogMessage": False,
                             "enableLogDetails": True, "dedupStrategy": "none",
                             "sortOrder": "Descending"}})
d.write("logarithm-job-logs.json")
