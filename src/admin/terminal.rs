//! `connect-facade status`: one replica's `/status` as tables in a terminal, once or refreshed
//! (`--watch`), over `kubectl port-forward` as well as on the pod's own loopback.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;

/// How one look at the replica went.
pub enum Look {
    /// The replica answered and is serving.
    Serving(String),
    /// The replica answered but is draining.
    Draining(String),
    /// No answer: why.
    Unreachable(String),
}

/// Asks `url`'s `/status` (with `token` as bearer token, when given) and renders it.
pub async fn look(url: &str, token: Option<&str>, timeout: Duration) -> Look {
    match tokio::time::timeout(timeout, fetch(url, token)).await {
        Err(_) => Look::Unreachable(format!("{url} did not answer within {timeout:?}")),
        Ok(Err(error)) => Look::Unreachable(error),
        Ok(Ok(status)) => {
            let text = render(url, &status);
            if status["serving"] == true {
                Look::Serving(text)
            } else {
                Look::Draining(text)
            }
        }
    }
}

async fn fetch(url: &str, token: Option<&str>) -> Result<Value, String> {
    let uri = format!("{}/status", url.trim_end_matches('/'));
    let mut request = Request::get(&uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|error| format!("{uri}: {error}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(request)
        .await
        .map_err(|error| format!("{uri}: {error}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|error| format!("{uri}: {error}"))?
        .to_bytes();
    if !status.is_success() {
        return Err(format!(
            "{uri} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|error| format!("{uri} answered no status: {error}"))
}

/// `/status` as a header line and tables.
pub fn render(url: &str, status: &Value) -> String {
    let rows = |key: &str| status[key].as_array().cloned().unwrap_or_default();
    let uptime = Duration::from_secs(status["uptime_seconds"].as_f64().unwrap_or(0.0) as u64);
    let mut out = format!(
        "connect-facade {} at {url}: {}, up {}, configuration {}\n\n",
        text(&status["version"]),
        if status["serving"] == true {
            "serving"
        } else {
            "DRAINING"
        },
        humantime::format_duration(uptime),
        text(&status["config_hash"]),
    );
    out.push_str(&store_line(&status["store"]));
    let routes = rows("routes").iter().map(route_row).collect();
    out.push_str(&table(
        &[
            "ROUTE",
            "ACCOUNT",
            "REGION",
            "BREAKER",
            "RATE/S",
            "BURST",
            "WAITING",
            "NEXT WAIT",
            "LAST MINUTE (ok/throttled/failed)",
        ],
        routes,
    ));
    if let Some(fleet) = status["fleet"].as_array() {
        out.push('\n');
        let replicas = fleet.iter().map(replica_row).collect();
        out.push_str(&table(&["REPLICA", "SEEN", "STATE"], replicas));
    }
    let callers = rows("callers");
    if !callers.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &[
                "CALLER",
                "WEIGHT",
                "MAX RATE",
                "WAITING",
                "SHARE",
                "INSTANCES",
            ],
            callers.iter().map(caller_row).collect(),
        ));
    }
    let refusals = rows("refusals");
    out.push('\n');
    if refusals.is_empty() {
        out.push_str("no refused call since start\n");
    } else {
        out.push_str("last refusals, newest first:\n");
        out.push_str(&table(
            &["AT", "CALLER", "REASON", "CODE", "INSTANCE"],
            refusals
                .iter()
                .take(10)
                .map(|r| {
                    ["at", "caller", "reason", "code", "instance_id"]
                        .map(|k| text(&r[k]))
                        .to_vec()
                })
                .collect(),
        ));
    }
    out
}

/// A JSON value as a cell: strings bare, `null` as `-`, fractions to two places.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    }
}

/// `value` through `show`, or `-` when it is not a number.
fn number(value: &Value, show: impl Fn(f64) -> String) -> String {
    value.as_f64().map_or_else(|| "-".to_owned(), show)
}

fn store_line(store: &Value) -> String {
    if store["kind"] != "redis" {
        return "quota store: local (in this process)\n\n".to_owned();
    }
    format!(
        "quota store: redis {} ({}), {}, round trip {} ms, {} outage(s) since start\n\n",
        text(&store["address"]),
        text(&store["topology"]),
        if store["up"] == true {
            "up"
        } else {
            "DOWN: on the local fallback"
        },
        number(&store["round_trip_ms"], |ms| format!("{ms:.1}")),
        text(&store["outages"]),
    )
}

fn route_row(route: &Value) -> Vec<String> {
    let mut row = [
        "name",
        "account_key",
        "region",
        "breaker",
        "rate_per_second",
        "burst",
        "waiting",
    ]
    .map(|k| text(&route[k]))
    .to_vec();
    row.push(number(&route["predicted_wait_ms"], |ms| {
        format!("{ms:.0} ms")
    }));
    let minute = &route["last_minute"];
    row.push(format!(
        "{}/{}/{}",
        text(&minute["ok"]),
        text(&minute["throttled"]),
        text(&minute["failed"])
    ));
    row
}

fn replica_row(replica: &Value) -> Vec<String> {
    let mut name = text(&replica["replica"]);
    if replica["this"] == true {
        name.push_str(" (this one)");
    }
    vec![
        name,
        number(&replica["seconds_ago"], |s| format!("{s:.1}s ago")),
        if replica["live"] == true {
            "live"
        } else {
            "silent"
        }
        .to_owned(),
    ]
}

fn caller_row(caller: &Value) -> Vec<String> {
    let instances: Vec<String> = caller["instances"]
        .as_array()
        .map(|i| i.iter().map(text).collect())
        .unwrap_or_default();
    vec![
        text(&caller["name"]),
        text(&caller["weight"]),
        text(&caller["max_rate"]),
        text(&caller["waiting"]),
        number(&caller["share"], |s| format!("{:.0}%", s * 100.0)),
        instances.join(","),
    ]
}

/// Columns padded to their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_renders_as_aligned_tables() {
        let status = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 62.5, "serving": true, "config_hash": "abc",
            "routes": [{"name": "uk", "account_key": "111122223333:eu-west-2", "region": "eu-west-2",
                        "breaker": "open", "rate_per_second": 1.5, "burst": 4, "waiting": 3,
                        "predicted_wait_ms": 1500.0,
                        "last_minute": {"ok": 10, "throttled": 2, "failed": 1}}],
            "store": {"kind": "redis", "address": "redis://:***@r:6379", "topology": "sentinel",
                      "up": false, "outages": 2, "round_trip_ms": 0.4},
            "fleet": [{"replica": "r-1", "this": true, "seconds_ago": 0.5, "live": true},
                      {"replica": "r-2", "this": false, "seconds_ago": 7.0, "live": false}],
            "callers": [{"name": "billing", "weight": 3.0, "max_rate": null, "instances": ["*"],
                         "waiting": 3, "share": 0.75}],
            "refusals": [{"at": "2026-12-06T13:00:00.000Z", "caller": "billing",
                          "reason": "RATE_LIMITED", "code": "resource_exhausted", "instance_id": "i"}]
        });
        let text = render("http://127.0.0.1:9901", &status);
        assert!(
            text.starts_with("connect-facade 0.1.0 at http://127.0.0.1:9901: serving, up 1m 2s"),
            "{text}"
        );
        assert!(
            text.contains("DOWN: on the local fallback, round trip 0.4 ms"),
            "{text}"
        );
        for row in [
            "uk     111122223333:eu-west-2  eu-west-2  open     1.50    4      3        1500 ms    10/2/1",
            "r-1 (this one)  0.5s ago  live",
            "r-2             7.0s ago  silent",
            "billing  3.0     -         3        75%    *",
        ] {
            assert!(text.contains(row), "{row:?} in\n{text}");
        }
        assert!(text.contains("RATE_LIMITED"), "{text}");
    }
}
