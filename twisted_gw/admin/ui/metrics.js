// Reads the Prometheus text of GET /metrics (CONTRACT 4.6, and 5.1's
// attempts and cooldowns) into the few numbers the Overview shows. Pure
// functions, no I/O.

// "name{a=\"1\",b=\"x\"} 3.0" -> {name, labels: {a: "1", b: "x"}, value: 3}
export function parsePrometheus(text) {
  const samples = [];
  for (const raw of String(text).split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    const body = match[2] || "";
    for (const m of body.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) {
      labels[m[1]] = m[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
    }
    const value = Number(match[3]);
    if (Number.isFinite(value)) samples.push({ name: match[1], labels, value });
  }
  return samples;
}

function add(map, key, value) {
  map.set(key, (map.get(key) || 0) + value);
}

// The row of one model's deployment (CONTRACT 5.1: target "<index>" or
// "<fallback model>#<index>") in `map`, made on first use.
function deployment(map, labels) {
  const model = labels.model || "-";
  const target = labels.target || "-";
  const key = JSON.stringify([model, target]);
  if (!map.has(key))
    map.set(key, { model, target, ok: 0, failed: 0, failures: new Map(), cooldowns: 0 });
  return map.get(key);
}

// The model's own deployments first (by index), then each fallback's.
function targetOrder(target) {
  const m = /^(?:(.*)#)?(\d+)$/.exec(target);
  return m ? [m[1] === undefined ? 0 : 1, m[1] ?? "", Number(m[2])] : [2, target, 0];
}

function byModelAndTarget(a, b) {
  if (a.model !== b.model) return a.model.localeCompare(b.model);
  const [x, y] = [targetOrder(a.target), targetOrder(b.target)];
  return x[0] - y[0] || String(x[1]).localeCompare(String(y[1])) || x[2] - y[2];
}

// The Overview's numbers, since the gateway started.
export function summarize(samples) {
  const byStatus = new Map();
  const tokensByModel = new Map(); // model -> {prompt, completion, total}
  let requests = 0;
  let latencySum = 0;
  let latencyCount = 0;
  const tokens = { prompt: 0, completion: 0, total: 0 };
  const streamEnds = new Map();
  const deployments = new Map();
  for (const { name, labels, value } of samples) {
    if (name === "aisix_request_count_total") {
      requests += value;
      add(byStatus, labels.status_code || "-", value);
    } else if (name === "aisix_token_count_total" && labels.type in tokens) {
      tokens[labels.type] += value;
      const model = labels.model || "-";
      if (!tokensByModel.has(model))
        tokensByModel.set(model, { prompt: 0, completion: 0, total: 0 });
      tokensByModel.get(model)[labels.type] += value;
    } else if (name === "aisix_request_latency_milliseconds_sum") {
      latencySum += value;
    } else if (name === "aisix_request_latency_milliseconds_count") {
      latencyCount += value;
    } else if (name === "twisted_gw_stream_ends_total") {
      add(streamEnds, labels.end || "-", value);
    } else if (name === "twisted_gw_upstream_attempts_total") {
      const row = deployment(deployments, labels);
      if (labels.outcome === "ok") row.ok += value;
      else {
        row.failed += value;
        add(row.failures, labels.outcome || "-", value);
      }
    } else if (name === "twisted_gw_deployment_cooldowns_total") {
      deployment(deployments, labels).cooldowns += value;
    }
  }
  let clientErrors = 0;
  let serverErrors = 0;
  for (const [status, count] of byStatus) {
    const code = Number(status);
    if (code >= 500) serverErrors += count;
    else if (code >= 400) clientErrors += count;
  }
  const errors = clientErrors + serverErrors;
  return {
    requests,
    errors,
    clientErrors,
    serverErrors,
    errorRate: requests > 0 ? errors / requests : null,
    tokens,
    tokensByModel,
    byStatus,
    streamEnds,
    // [{model, target, ok, failed, failures: Map outcome -> n, cooldowns}]
    deployments: [...deployments.values()]
      .filter((d) => d.ok + d.failed + d.cooldowns > 0)
      .sort(byModelAndTarget),
    meanLatencyMs: latencyCount > 0 ? latencySum / latencyCount : null,
  };
}
