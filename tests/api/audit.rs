//! GET /admin/audit-logs: scoping, filters, paging, cursors.

use crate::common;
use shared::audit::Audit;

use std::collections::HashSet;

use crate::common::{TestApp, TestResponse, s};
use serde_json::{Value, json};
use shared::{
    audit::{AuditEntry, AuditStatus},
    http::RequestMeta,
};

async fn audit_logs(t: &TestApp, tokens: &Value, query: &[(&str, &str)]) -> TestResponse {
    let raw: Vec<String> =
        query.iter().map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(':', "%3A"))).collect();
    let mut event: Value = serde_json::from_str(&common::http_event(
        "GET",
        "/admin/audit-logs",
        &[("authorization", &format!("Bearer {}", tokens["access_token"].as_str().unwrap()))],
        None,
    ))
    .unwrap();
    event["rawQueryString"] = json!(raw.join("&"));
    event["queryStringParameters"] =
        json!(query.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>());
    t.invoke(shared::api::audit::handle, &event.to_string()).await
}

/// Seeds `n` entries in `org_id` with a spread of actions, statuses, actors and targets.
async fn seed(t: &TestApp, org_id: &str, n: usize) {
    let meta = RequestMeta { request_id: "seed".into(), source_ip: Some("10.0.0.1".into()), ..Default::default() };
    for chunk in (0..n).collect::<Vec<_>>().chunks(25) {
        let writes = chunk.iter().map(|i| {
            let action = ["test.alpha", "test.beta", "test.gamma"][i % 3];
            let status = if i % 4 == 0 { AuditStatus::Failure } else { AuditStatus::Success };
            let entry = AuditEntry::new(action, status, org_id, &meta)
                .actor(&format!("actor-{}", i % 5))
                .target(&format!("target-{}", i % 7))
                .details(json!({ "i": i }));
            let log = t.app.audit();
            async move { log.record(&entry).await.unwrap() }
        });
        futures::future::join_all(writes).await;
    }
}

async fn all_entries(t: &TestApp, org_id: &str) -> Vec<Value> {
    let mut items: Vec<Value> = t
        .partition(&format!("AUDIT#{org_id}"))
        .await
        .into_iter()
        .map(|item| json!({"id": s(&item, "id"), "SK": s(&item, "SK"), "action": s(&item, "action"), "status": s(&item, "status"),
            "actor": item.get("actor_user_id").map(|_| s(&item, "actor_user_id")), "target": item.get("target_user_id").map(|_| s(&item, "target_user_id"))}))
        .collect();
    items.sort_by(|a, b| b["SK"].as_str().cmp(&a["SK"].as_str()));
    items
}

async fn ids_of_all_pages(t: &TestApp, admin: &Value, query: &[(&str, &str)]) -> (Vec<String>, u64) {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut total;
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &cursor {
            q.push(("cursor", c.as_str()));
        }
        let page = audit_logs(t, admin, &q).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        total = page.body["total"].as_u64().unwrap();
        ids.extend(page.body["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    (ids, total)
}

#[tokio::test]
async fn paging_returns_every_entry_once_newest_first_with_the_total() {
    let t = TestApp::new().await;
    let (_, admin) = t.logged_in("audit-admin").await;
    let org_id = t.me(admin["access_token"].as_str().unwrap()).await.body["org_id"].as_str().unwrap().to_owned();
    seed(&t, &org_id, 250).await;
    t.audit_counted(&org_id).await;
    let expected: Vec<String> =
        all_entries(&t, &org_id).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert!(expected.len() >= 250);

    let first = audit_logs(&t, &admin, &[("limit", "40")]).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 40);
    let item = &first.body["items"][0];
    for key in [
        "id",
        "at",
        "action",
        "status",
        "actor_user_id",
        "target_user_id",
        "org_id",
        "ip",
        "user_agent",
        "request_id",
        "details",
    ] {
        assert!(item.get(key).is_some(), "{key}");
    }
    let (ids, total) = ids_of_all_pages(&t, &admin, &[("limit", "40")]).await;
    assert_eq!(ids, expected, "each entry once, newest first");
    assert_eq!(total as usize, expected.len());
}

#[tokio::test]
async fn filters_alone_and_combined_match_the_log() {
    let t = TestApp::new().await;
    let (_, admin) = t.logged_in("audit-filters").await;
    let org_id = t.me(admin["access_token"].as_str().unwrap()).await.body["org_id"].as_str().unwrap().to_owned();
    seed(&t, &org_id, 60).await;
    t.audit_counted(&org_id).await;
    let entries = all_entries(&t, &org_id).await;
    type Case<'a> = (Vec<(&'a str, &'a str)>, Box<dyn Fn(&Value) -> bool>);
    let cases: Vec<Case> = vec![
        (vec![("action", "test.beta")], Box::new(|e| e["action"] == "test.beta")),
        (vec![("status", "failure")], Box::new(|e| e["status"] == "failure")),
        (vec![("actor_user_id", "actor-2")], Box::new(|e| e["actor"] == "actor-2")),
        (vec![("target_user_id", "target-3")], Box::new(|e| e["target"] == "target-3")),
        (
            vec![("action", "test.alpha"), ("status", "failure")],
            Box::new(|e| e["action"] == "test.alpha" && e["status"] == "failure"),
        ),
        (
            vec![("actor_user_id", "actor-1"), ("target_user_id", "target-1"), ("status", "success")],
            Box::new(|e| e["actor"] == "actor-1" && e["target"] == "target-1" && e["status"] == "success"),
        ),
    ];
    for (query, keep) in cases {
        let expected: Vec<String> =
            entries.iter().filter(|e| keep(e)).map(|e| e["id"].as_str().unwrap().to_owned()).collect();
        let mut q = query.clone();
        q.push(("limit", "7"));
        let (ids, total) = ids_of_all_pages(&t, &admin, &q).await;
        assert_eq!(ids, expected, "{query:?}");
        assert_eq!(total as usize, expected.len(), "{query:?}");
    }

    // A time window: since/until are inclusive bounds on `at`.
    let sks: Vec<&str> = entries.iter().map(|e| e["SK"].as_str().unwrap()).collect();
    let (newest, oldest) = (&sks[10][..27], &sks[30][..27]);
    let (ids, _) = ids_of_all_pages(&t, &admin, &[("since", oldest), ("until", newest), ("limit", "100")]).await;
    let expected: Vec<String> = entries
        .iter()
        .filter(|e| {
            let at = &e["SK"].as_str().unwrap()[..27];
            at >= oldest && at <= newest
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, expected);
}

#[tokio::test]
async fn a_tampered_or_foreign_cursor_is_400() {
    let t = TestApp::new().await;
    let (_, admin) = t.logged_in("audit-cursor").await;
    let org_id = t.me(admin["access_token"].as_str().unwrap()).await.body["org_id"].as_str().unwrap().to_owned();
    seed(&t, &org_id, 10).await;
    let page = audit_logs(&t, &admin, &[("limit", "3")]).await;
    let cursor = page.body["next_cursor"].as_str().unwrap().to_owned();
    let mut tampered = cursor.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for bad in [tampered.as_str(), "not-a-cursor"] {
        let response = audit_logs(&t, &admin, &[("limit", "3"), ("cursor", bad)]).await;
        assert_eq!((response.status, response.body["code"].as_str()), (400, Some("validation_failed")));
    }
    // A cursor is bound to its filter.
    let other = audit_logs(&t, &admin, &[("limit", "3"), ("status", "failure"), ("cursor", &cursor)]).await;
    assert_eq!(other.status, 400);
    let bad_limit = audit_logs(&t, &admin, &[("limit", "500")]).await;
    assert_eq!(bad_limit.body["code"], "validation_failed");
    let backwards =
        audit_logs(&t, &admin, &[("since", "2026-11-02T00:00:00Z"), ("until", "2026-11-01T00:00:00Z")]).await;
    assert_eq!((backwards.status, backwards.body["code"].as_str()), (400, Some("validation_failed")));
}

#[tokio::test]
async fn members_viewers_and_other_orgs_see_nothing_of_this_org() {
    let t = TestApp::new().await;
    let (admin, _, member, _) = t.org_with_member("member").await;
    let org_id = t.me(admin["access_token"].as_str().unwrap()).await.body["org_id"].as_str().unwrap().to_owned();
    seed(&t, &org_id, 5).await;
    let (_, _, viewer, _) = t.org_with_member("viewer").await;
    for (who, tokens) in [("member", &member), ("viewer", &viewer)] {
        let response = audit_logs(&t, tokens, &[]).await;
        assert_eq!((response.status, response.body["code"].as_str()), (403, Some("forbidden")), "{who}");
    }
    let (_, outsider) = t.logged_in("audit-outsider").await;
    let theirs = audit_logs(&t, &outsider, &[("limit", "100")]).await;
    assert_eq!(theirs.status, 200);
    let ours: HashSet<String> =
        all_entries(&t, &org_id).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect();
    assert!(
        theirs.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| !ours.contains(i["id"].as_str().unwrap()) && i["org_id"] != org_id.as_str())
    );
    let own = audit_logs(&t, &admin, &[]).await;
    assert!(own.body["items"].as_array().unwrap().iter().all(|i| i["org_id"] == org_id.as_str()));
    assert!(own.body["total"].as_u64().unwrap() >= 5);
}

/// A stream record of `entry`, as the event source mapping hands it to the notifier.
fn stream_record(entry: &AuditEntry, event_name: &str, sequence: usize) -> Value {
    let image: serde_dynamo::Item = serde_dynamo::to_item(entry).unwrap();
    json!({
        "eventID": format!("test-{sequence}"),
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "Keys": {"PK": {"S": entry.pk}, "SK": {"S": entry.sk}},
            "NewImage": image,
            "SequenceNumber": format!("{sequence:021}"),
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:000000000000:table/test/stream/x"
    })
}

#[tokio::test]
async fn totals_count_every_entry_exactly_once_through_redelivery_and_concurrent_batches() {
    let t = TestApp::new().await;
    let org_id = format!("org-totals-{}", uuid::Uuid::new_v4().simple());
    let meta = RequestMeta { request_id: "totals".into(), ..Default::default() };
    let entries: Vec<AuditEntry> = (0..60)
        .map(|i| {
            let status = if i % 3 == 0 { AuditStatus::Failure } else { AuditStatus::Success };
            AuditEntry::new(["test.one", "test.two"][i % 2], status, &org_id, &meta)
                .actor(&format!("actor-{}", i % 4))
                .target("target-x")
        })
        .collect();
    for entry in &entries {
        t.app.audit().record(entry).await.unwrap();
    }
    // The same records handed over again, four batches at once, beside the live notifier
    // that is counting them from the stream; with a change (MODIFY) that must not count.
    let mut records: Vec<Value> = entries.iter().enumerate().map(|(i, e)| stream_record(e, "INSERT", i)).collect();
    records.push(stream_record(&entries[0], "MODIFY", 999));
    let event: aws_lambda_events::event::dynamodb::Event =
        serde_json::from_value(json!({ "Records": records })).unwrap();
    let app = t.app;
    let batches = (0..4).map(|_| {
        let event = event.clone();
        tokio::spawn(async move { shared::notify::delivery::handle_batch(app, event).await })
    });
    for answer in futures::future::join_all(batches).await {
        assert!(answer.unwrap().batch_item_failures.is_empty(), "every record counted or found counted");
    }
    t.audit_counted(&org_id).await;
    let table = t.app.table();
    let total = |counter: &'static str| {
        let org_id = org_id.clone();
        async move { shared::audit::totals::read(table, &org_id, counter).await.unwrap() }
    };
    assert_eq!(total("ALL").await, 60);
    assert_eq!(total("action#test.one").await, 30);
    assert_eq!(total("status#failure").await, 20);
    assert_eq!(total("actor#actor-1").await, 15);
    assert_eq!(total("target#target-x").await, 60);
}
