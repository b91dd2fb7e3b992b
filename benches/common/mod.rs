//! What the benchmarks share: an API Gateway v2 event for a POST, as the functions get it,
//! and seeding the table in bulk.
#![allow(dead_code)] // each benchmark uses its own part

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

/// Puts `items` with BatchWriteItem, 8 batches of 25 in flight, retrying what DynamoDB leaves
/// unprocessed.
pub async fn seed_items(table: &shared::store::Table, items: Vec<shared::store::Item>) {
    use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
    let requests: Vec<WriteRequest> = items
        .into_iter()
        .map(|item| {
            WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
        })
        .collect();
    for group in requests.chunks(25 * 8) {
        let writes = group.chunks(25).map(|batch| async move {
            let mut pending = Some(batch.to_vec());
            while let Some(requests) = pending.take().filter(|r| !r.is_empty()) {
                let out = table
                    .client()
                    .batch_write_item()
                    .request_items(table.name(), requests)
                    .send()
                    .await
                    .expect("batch write");
                pending = out.unprocessed_items.and_then(|mut m| m.remove(table.name()));
            }
        });
        futures::future::join_all(writes).await;
    }
}
