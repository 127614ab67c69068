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
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.2}")),
        other => other.to_string(),
    };
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
    let store = &status["store"];
    out.push_str(&match text(&store["kind"]).as_str() {
        "redis" => format!(
            "quota store: redis {} ({}), {}, {} outage(s) since start\n\n",
            text(&store["address"]),
            text(&store["topology"]),
            if store["up"] == true {
                "up"
            } else {
                "DOWN: on the local fallback"
            },
            text(&store["outages"]),
        ),
        _ => "quota store: local (in this process)\n\n".to_owned(),
    });
    out.push_str(&table(
        &[
            "ROUTE", "ACCOUNT", "REGION", "BREAKER", "RATE/S", "BURST", "WAITING",
        ],
        rows("routes")
            .iter()
            .map(|r| {
                [
                    "name",
                    "account_key",
                    "region",
                    "breaker",
                    "rate_per_second",
                    "burst",
                    "waiting",
                ]
                .map(|k| text(&r[k]))
                .to_vec()
            })
            .collect(),
    ));
    let callers = rows("callers");
    if !callers.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["CALLER", "WEIGHT", "MAX RATE", "INSTANCES"],
            callers
                .iter()
                .map(|c| {
                    let instances: Vec<String> = c["instances"]
                        .as_array()
                        .map(|i| i.iter().map(text).collect())
                        .unwrap_or_default();
                    vec![
                        text(&c["name"]),
                        text(&c["weight"]),
                        text(&c["max_rate"]),
                        instances.join(","),
                    ]
                })
                .collect(),
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
                        "breaker": "open", "rate_per_second": 1.5, "burst": 4, "waiting": 3}],
            "store": {"kind": "redis", "address": "redis://:***@r:6379", "topology": "sentinel",
                      "up": false, "outages": 2},
            "callers": [{"name": "billing", "weight": 3.0, "max_rate": null, "instances": ["*"]}],
            "refusals": [{"at": "2026-12-06T13:00:00.000Z", "caller": "billing",
                          "reason": "RATE_LIMITED", "code": "resource_exhausted", "instance_id": "i"}]
        });
        let text = render("http://127.0.0.1:9901", &status);
        assert!(
            text.starts_with("connect-facade 0.1.0 at http://127.0.0.1:9901: serving, up 1m 2s"),
            "{text}"
        );
        assert!(text.contains("DOWN: on the local fallback"), "{text}");
        assert!(
            text.contains("uk     111122223333:eu-west-2  eu-west-2  open     1.50    4      3"),
            "{text}"
        );
        assert!(text.contains("billing  3       -"), "{text}");
        assert!(text.contains("RATE_LIMITED"), "{text}");
    }
}
