//! What the benchmarks share: an API Gateway v2 event for a POST, as the functions get it.

use serde_json::json;

/// A POST of `body` to `path` from one fixed client address.
pub fn event(path: &str, body: serde_json::Value) -> lambda_http::Request {
    let text = json!({
        "version": "2.0", "routeKey": format!("POST {path}"), "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {"accountId": "1", "apiId": "bench", "domainName": "bench", "domainPrefix": "bench",
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "10.0.0.1", "userAgent": "bench"},
            "requestId": uuid::Uuid::new_v4().to_string(), "routeKey": format!("POST {path}"), "stage": "$default",
            "time": "21/Nov/2026:12:00:00 +0000", "timeEpoch": 0},
        "body": body.to_string(), "isBase64Encoded": false
    });
    lambda_http::request::from_str(&text.to_string()).unwrap()
}
