//! The black-box harness: requests go in as real API Gateway v2 events, through
//! `lambda_http`'s own event parsing, into the same handlers the functions run, against the
//! local stack that `infra/test.sh` starts (DynamoDB Local and moto).
#![allow(dead_code)]

pub mod cfn;
pub mod faults;
pub mod money;

use std::{collections::HashMap, future::Future};

use aws_sdk_dynamodb::types::AttributeValue;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use shared::App;

pub struct TestApp {
    pub app: &'static App,
    /// The Stripe stand-in this app talks to, for apps made by [`TestApp::with_stripe`].
    pub stripe: Option<stripe_stand_in::StripeStandIn>,
    /// The fault-injecting proxy its DynamoDB client goes through, for apps made by
    /// [`TestApp::with_stripe_and_faults`].
    pub faults: Option<faults::DynamoFaults>,
    moto_url: String,
    http: reqwest::Client,
}

pub struct TestResponse {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Value,
}

impl TestResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// An address no other test uses, so tests can run in parallel on one table.
pub fn unique_email(tag: &str) -> String {
    format!("{tag}-{}@example.com", uuid::Uuid::new_v4().simple())
}

pub const STRONG_PASSWORD: &str = "correct horse battery staple";

/// Runs `event` through `handler` on its own task, so many run truly concurrently:
/// the answer's (status, JSON body).
pub fn spawn_invoke<F, Fut>(app: &'static App, handler: F, event: String) -> tokio::task::JoinHandle<(u16, Value)>
where
    F: FnOnce(&'static App, Request) -> Fut + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    tokio::spawn(async move {
        let response = handler(app, lambda_http::request::from_str(&event).expect("a valid event")).await;
        let body = serde_json::from_slice(response.body().as_ref()).unwrap_or(Value::Null);
        (response.status().as_u16(), body)
    })
}

/// An HTTP client for the tests. reqwest is built without a TLS provider of its own (the
/// app installs aws-lc-rs, which the SDK already uses), so the tests install it too.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::new()
}

/// A new secret for the part that holds `field`: the stack's, with `field` set to `value`.
/// Returns the variable that names that part's secret, and the new secret's name.
async fn secret_with(sdk: &aws_config::SdkConfig, field: &str, value: Value) -> (&'static str, String) {
    let part = shared::secrets::Part::of_field(field).expect("a field some secret holds");
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    let stack_secret = sm
        .get_secret_value()
        .secret_id(std::env::var(part.env()).expect("the stack names every secret"))
        .send()
        .await
        .expect("stack secret")
        .secret_string
        .unwrap();
    let mut secret: Value = serde_json::from_str(&stack_secret).unwrap();
    secret[field] = value;
    let name = format!("test/{}", uuid::Uuid::new_v4().simple());
    sm.create_secret().name(&name).secret_string(secret.to_string()).send().await.expect("secret");
    (part.env(), name)
}

/// A client address of its own, so per-address rate limits of parallel tests don't meet.
pub fn random_ip() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("10.{}.{}.{}", b[0], b[1], b[2])
}

/// An API Gateway HTTP API (payload 2.0) event from a random client address.
pub fn http_event(method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> String {
    http_event_from(&random_ip(), method, path, headers, body)
}

/// An API Gateway HTTP API (payload 2.0) event, as API Gateway would send it.
pub fn http_event_from(ip: &str, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&str>) -> String {
    let mut header_map: serde_json::Map<String, Value> =
        headers.iter().map(|(k, v)| (k.to_lowercase(), json!(v))).collect();
    header_map.entry("content-type").or_insert(json!("application/json"));
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "test",
            "domainName": "test.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "test",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": ip,
                "userAgent": "backend-tests"
            },
            "requestId": format!("apigw-{}", uuid::Uuid::new_v4().simple()),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "21/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1795262400000u64
        },
        "body": body,
        "isBase64Encoded": false
    })
    .to_string()
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_env(&[]).await
    }

    /// An app whose settings are the stack's environment with `overrides` on top.
    pub async fn with_env(overrides: &[(&str, &str)]) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_env_and_sdk(overrides, sdk).await
    }

    async fn with_env_and_sdk(overrides: &[(&str, &str)], sdk: aws_config::SdkConfig) -> Self {
        if std::env::var("AWS_ENDPOINT_URL_DYNAMODB").is_err() {
            panic!("the black-box tests need the local stack: run them with infra/test.sh");
        }
        shared::telemetry::init();
        let overrides: HashMap<String, String> =
            overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let settings = shared::config::Settings::from_lookup(|key| {
            overrides.get(key).cloned().or_else(|| std::env::var(key).ok())
        })
        .expect("the test stack's settings are complete");
        let app = App::new(settings, sdk);
        Self {
            app: Box::leak(Box::new(app)),
            stripe: None,
            faults: None,
            moto_url: std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL points at moto"),
            http: http_client(),
        }
    }

    /// An app wired to a fresh Stripe stand-in: the stack's secret plus a Stripe key, with
    /// short timeouts so failure tests stay quick.
    pub async fn with_stripe(overrides: &[(&str, &str)]) -> Self {
        Self::stripe_app(overrides, false).await
    }

    /// Like [`TestApp::with_stripe`], with its DynamoDB client behind a [`faults::DynamoFaults`]
    /// proxy (see [`TestApp::faults`]).
    pub async fn with_stripe_and_faults(overrides: &[(&str, &str)]) -> Self {
        Self::stripe_app(overrides, true).await
    }

    pub fn faults(&self) -> &faults::DynamoFaults {
        self.faults.as_ref().expect("made with TestApp::with_stripe_and_faults")
    }

    /// Another app on the same stand-in and secret, without the fault proxy: what a later
    /// invocation (or the scheduled job) would be.
    pub async fn healthy_twin(&self) -> TestApp {
        let stand_in = self.stand_in().clone();
        let mut settings: Vec<(String, String)> =
            self.app.settings().secret_ids.iter().map(|(part, id)| (part.env().into(), id.into())).collect();
        settings.extend([
            ("STRIPE_API_BASE".into(), stand_in.url()),
            ("STRIPE_TIMEOUT_MS".into(), "1000".into()),
            ("STRIPE_MAX_ATTEMPTS".into(), "2".into()),
        ]);
        settings.retain(|(_, v)| !v.is_empty());
        let borrowed: Vec<(&str, &str)> = settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut twin = Self::with_env(&borrowed).await;
        twin.stripe = Some(stand_in);
        twin
    }

    async fn stripe_app(overrides: &[(&str, &str)], with_faults: bool) -> Self {
        let stand_in = stripe_stand_in::StripeStandIn::start().await;
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let (secret_env, name) =
            secret_with(&sdk, "stripe_secret_key", json!("sk_test_standin_0000000000000000000000")).await;
        let url = stand_in.url();
        let mut all: Vec<(&str, &str)> = vec![
            (secret_env, name.as_str()),
            ("STRIPE_API_BASE", url.as_str()),
            ("STRIPE_TIMEOUT_MS", "1000"),
            ("STRIPE_MAX_ATTEMPTS", "2"),
        ];
        all.extend_from_slice(overrides);
        let mut t = if with_faults {
            let dynamodb = std::env::var("AWS_ENDPOINT_URL_DYNAMODB").expect("DynamoDB Local");
            let faults = faults::DynamoFaults::start(&dynamodb).await;
            let sdk = sdk.into_builder().service_config(faults::DynamoVia(faults.url().to_owned())).build();
            let mut t = Self::with_env_and_sdk(&all, sdk).await;
            t.faults = Some(faults);
            t
        } else {
            Self::with_env(&all).await
        };
        t.stripe = Some(stand_in);
        t
    }

    /// An app whose secret holds a CAPTCHA secret, checked against `verify_url` (a stand-in
    /// `siteverify`).
    pub async fn with_captcha(secret: &str, verify_url: &str, overrides: &[(&str, &str)]) -> Self {
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let (secret_env, name) = secret_with(&sdk, "captcha_secret", json!(secret)).await;
        let mut all: Vec<(&str, &str)> = vec![(secret_env, name.as_str()), ("CAPTCHA_VERIFY_URL", verify_url)];
        all.extend_from_slice(overrides);
        Self::with_env(&all).await
    }

    pub fn stand_in(&self) -> &stripe_stand_in::StripeStandIn {
        self.stripe.as_ref().expect("made with TestApp::with_stripe")
    }

    /// Sends an API Gateway v2 event (JSON text) through `handler`.
    pub async fn invoke<F, Fut>(&self, handler: F, event: &str) -> TestResponse
    where
        F: Fn(&'static App, Request) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let request = lambda_http::request::from_str(event).expect("a valid API Gateway v2 event");
        // Boxed: a debug build's handler future is large, and tests nest several.
        let response = Box::pin(handler(self.app, request)).await;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let bytes = response.body().as_ref();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(bytes).expect("JSON body") };
        TestResponse { status, headers, body }
    }

    pub async fn register(&self, body: Value) -> TestResponse {
        let event = http_event("POST", "/auth/register", &[], Some(&body.to_string()));
        self.invoke(shared::api::register::handle, &event).await
    }

    pub async fn post<F, Fut>(&self, handler: F, path: &str, body: Value) -> TestResponse
    where
        F: Fn(&'static App, Request) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let event = http_event("POST", path, &[], Some(&body.to_string()));
        self.invoke(handler, &event).await
    }

    /// Registers a fresh address and returns it with the verification token from its email.
    pub async fn registered(&self, tag: &str) -> (String, String) {
        let email = unique_email(tag);
        let response = self.register(json!({"email": email, "password": STRONG_PASSWORD})).await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        let token = self.emails_to(&email).await[0].token_for("/verify-email").expect("verification link");
        (email, token)
    }

    /// A registered, verified user; returns the address.
    pub async fn verified_user(&self, tag: &str) -> String {
        let (email, token) = self.registered(tag).await;
        let verified = self.post(shared::api::verify::handle, "/auth/verify-email", json!({"token": token})).await;
        assert_eq!(verified.status, 200, "{:?}", verified.body);
        email
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.post(shared::api::login::handle, "/auth/login", json!({"email": email, "password": password})).await
    }

    /// A login from the client address `ip` (password attempts count per account and address).
    pub async fn login_from(&self, ip: &str, email: &str, password: &str) -> TestResponse {
        let body = json!({"email": email, "password": password}).to_string();
        self.invoke(shared::api::login::handle, &http_event_from(ip, "POST", "/auth/login", &[], Some(&body))).await
    }

    /// A verified user's login answer (tokens).
    pub async fn logged_in(&self, tag: &str) -> (String, Value) {
        let email = self.verified_user(tag).await;
        let response = self.login(&email, STRONG_PASSWORD).await;
        assert_eq!(response.status, 200, "{:?}", response.body);
        (email, response.body)
    }

    /// Sends a request with a bearer token (and any extra headers) through `handler`.
    pub async fn authed<F, Fut>(
        &self,
        handler: F,
        method: &str,
        path: &str,
        access_token: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> TestResponse
    where
        F: Fn(&'static App, Request) -> Fut,
        Fut: Future<Output = Response<Body>>,
    {
        let auth = format!("Bearer {access_token}");
        let mut all: Vec<(&str, &str)> = vec![("authorization", auth.as_str())];
        all.extend_from_slice(headers);
        let body = body.map(|b| b.to_string());
        let event = http_event(method, path, &all, body.as_deref());
        self.invoke(handler, &event).await
    }

    pub async fn me(&self, access_token: &str) -> TestResponse {
        self.authed(shared::api::login::handle, "GET", "/auth/me", access_token, &[], None).await
    }

    /// An admin, and a second user who joined the admin's org by invitation with `role`:
    /// (admin tokens, member email, member tokens, member user id).
    pub async fn org_with_member(&self, role: &str) -> (Value, String, Value, String) {
        let (_, admin) = self.logged_in("admin").await;
        let member_email = unique_email("member");
        let invited = self.invite(&admin, &member_email, role).await;
        assert_eq!(invited.status, 202);
        let invitation =
            self.emails_to(&member_email).await[0].token_for("/accept-invitation").expect("invitation link");
        let joined = self
            .register(json!({"email": member_email, "password": STRONG_PASSWORD, "invitation_token": invitation}))
            .await;
        assert_eq!(joined.status, 202, "{:?}", joined.body);
        let verify = self.emails_to(&member_email).await.last().unwrap().token_for("/verify-email").unwrap();
        assert_eq!(
            self.post(shared::api::verify::handle, "/auth/verify-email", json!({"token": verify})).await.status,
            200
        );
        let member = self.login(&member_email, STRONG_PASSWORD).await.body;
        let member_id = s(&self.user_by_email(&member_email).await, "user_id");
        (admin, member_email, member, member_id)
    }

    /// A verification email to `to` as an outbox item, sealed as every email is.
    pub async fn sealed_verification(&self, to: &str) -> shared::outbox::OutboxItem {
        use shared::outbox::{Message, OutboxItem};
        let link = json!({"link": "http://localhost:3000/verify-email?token=abc"});
        let email = Message::email(shared::notify::EmailKind::VerifyEmail, to, link);
        OutboxItem::sealed(email, &self.app.outbox_sealer().await.unwrap()).unwrap()
    }

    /// `admin` invites `email` into their org as `role`.
    pub async fn invite(&self, admin: &Value, email: &str, role: &str) -> TestResponse {
        let access = admin["access_token"].as_str().unwrap();
        let body = Some(json!({"email": email, "role": role}));
        self.authed(shared::api::account::handle, "POST", "/orgs/invitations", access, &[], body).await
    }

    /// Sets attributes of an item directly, standing in for what another component
    /// (the webhook, Stripe onboarding) would write.
    pub async fn set(&self, pk: &str, sk: &str, values: &[(&str, AttributeValue)]) {
        let mut expression = Vec::new();
        let mut request = self
            .app
            .table()
            .client()
            .update_item()
            .table_name(self.app.table().name())
            .key("PK", AttributeValue::S(pk.into()))
            .key("SK", AttributeValue::S(sk.into()));
        for (i, (name, value)) in values.iter().enumerate() {
            expression.push(format!("#n{i} = :v{i}"));
            request = request
                .expression_attribute_names(format!("#n{i}"), *name)
                .expression_attribute_values(format!(":v{i}"), value.clone());
        }
        request.update_expression(format!("SET {}", expression.join(", "))).send().await.expect("update");
    }

    pub async fn user_by_email(&self, email: &str) -> HashMap<String, AttributeValue> {
        let guard = self.item(&format!("EMAIL#{email}"), "EMAIL").await.expect("email guard");
        self.item(&format!("USER#{}", s(&guard, "user_id")), "PROFILE").await.expect("user")
    }

    pub async fn item(&self, pk: &str, sk: &str) -> Option<HashMap<String, AttributeValue>> {
        self.app
            .table()
            .client()
            .get_item()
            .table_name(self.app.table().name())
            .key("PK", AttributeValue::S(pk.into()))
            .key("SK", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("get_item")
            .item
    }

    /// All items under one partition key.
    pub async fn partition(&self, pk: &str) -> Vec<HashMap<String, AttributeValue>> {
        self.app
            .table()
            .client()
            .query()
            .table_name(self.app.table().name())
            .key_condition_expression("PK = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
            .consistent_read(true)
            .send()
            .await
            .expect("query")
            .items
            .unwrap_or_default()
    }

    /// The keys of every item in the table (a full scan, as a stolen backup would read it)
    /// with a string anywhere in it that contains `needle`.
    pub async fn items_holding(&self, needle: &str) -> Vec<String> {
        self.items_where(&|value: &str| value.contains(needle)).await
    }

    /// Like [`TestApp::items_holding`], for values that are exactly `value` (a short code
    /// could stand inside some other test's hash or timestamp by chance).
    pub async fn items_valued(&self, value: &str) -> Vec<String> {
        self.items_where(&|stored: &str| stored == value).await
    }

    async fn items_where(&self, matches: &dyn Fn(&str) -> bool) -> Vec<String> {
        fn holds(value: &AttributeValue, matches: &dyn Fn(&str) -> bool) -> bool {
            match value {
                AttributeValue::S(s) | AttributeValue::N(s) => matches(s),
                AttributeValue::Ss(list) | AttributeValue::Ns(list) => list.iter().any(|s| matches(s)),
                AttributeValue::L(list) => list.iter().any(|v| holds(v, matches)),
                AttributeValue::M(map) => map.values().any(|v| holds(v, matches)),
                AttributeValue::B(bytes) => matches(&String::from_utf8_lossy(bytes.as_ref())),
                _ => false,
            }
        }
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .app
                .table()
                .client()
                .scan()
                .table_name(self.app.table().name())
                .set_exclusive_start_key(start)
                .send()
                .await
                .expect("scan");
            for item in page.items.unwrap_or_default() {
                if item.values().any(|v| holds(v, matches)) {
                    found.push(format!("{} / {}", s(&item, "PK"), s(&item, "SK")));
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return found;
            }
        }
    }

    async fn moto_data(&self) -> Value {
        self.http
            .get(format!("{}/moto-api/data.json", self.moto_url))
            .send()
            .await
            .expect("moto answers")
            .json()
            .await
            .expect("moto data is JSON")
    }

    /// Waits until the notifier has delivered every outbox item committed before this call.
    /// A sentinel message goes through the same ordered stream behind them, so once it is
    /// delivered, so is everything before it (or it failed and was retried first).
    pub async fn outbox_delivered(&self) {
        use shared::outbox::{Message, OutboxItem};
        let item = OutboxItem::new(Message::event(&shared::notify::DomainEvent::new(
            "test.sentinel",
            json!({"note": "the test harness waits for this"}),
        )));
        let table = self.app.table();
        table.transact(vec![item.put(table).expect("an outbox item")]).await.expect("sentinel committed");
        for _ in 0..600 {
            if self.item(&item.pk, "DELIVERY").await.is_some_and(|d| s(&d, "status") == "sent") {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the notifier delivered nothing for 60 s: is the stream poller running (infra/test.sh)?");
    }

    /// Emails moto recorded as sent to `to` (moto keeps the HTML part as `body`), once the
    /// notifier has caught up.
    pub async fn emails_to(&self, to: &str) -> Vec<SentEmail> {
        self.outbox_delivered().await;
        let data = self.moto_data().await;
        data["ses"]["Message"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["destinations"]["ToAddresses"].as_array().is_some_and(|a| a.iter().any(|x| x == to)))
            .map(|m| SentEmail {
                subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                body: m["body"].as_str().unwrap_or_default().to_owned(),
                source: m["source"].as_str().unwrap_or_default().to_owned(),
            })
            .collect()
    }

    /// Waits until the notifier has counted every entry of `org_id`'s audit log toward the
    /// totals (it counts from the table's stream, within seconds).
    pub async fn audit_counted(&self, org_id: &str) {
        for _ in 0..600 {
            let entries = self.partition(&format!("AUDIT#{org_id}")).await;
            if entries.iter().all(|entry| entry.contains_key("counted")) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("the audit entries of {org_id} were not all counted within a minute");
    }

    /// SMS messages moto recorded as sent to `phone`, once the notifier has caught up.
    pub async fn sms_to(&self, phone: &str) -> Vec<String> {
        self.outbox_delivered().await;
        let data = self.moto_data().await;
        data["sns"]["SMS"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["phone_number"] == phone)
            .map(|m| m["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Push messages moto recorded for a platform endpoint (SNS's JSON message structure,
    /// parsed), once the notifier has caught up.
    pub async fn pushes_to(&self, endpoint_arn: &str) -> Vec<Value> {
        self.outbox_delivered().await;
        let data = self.moto_data().await;
        data["sns"]["PlatformEndpoint"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["arn"] == endpoint_arn)
            .flat_map(|e| e["messages"].as_object().cloned().unwrap_or_default().into_values())
            .map(|m| serde_json::from_str(m.as_str().unwrap_or("null")).unwrap_or(Value::Null))
            .collect()
    }

    /// Domain events published to the events topic, with their `event_type` attribute, once
    /// the notifier has caught up.
    pub async fn published_events(&self) -> Vec<(String, Value)> {
        self.outbox_delivered().await;
        let topic = std::env::var("EVENTS_TOPIC_ARN").expect("EVENTS_TOPIC_ARN");
        let data = self.moto_data().await;
        data["sns"]["Topic"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["arn"] == topic.as_str())
            .flat_map(|t| t["sent_notifications"].as_array().cloned().unwrap_or_default())
            .map(|n| {
                let attribute = n[3]["event_type"]["Value"]
                    .as_str()
                    .or_else(|| n[3]["event_type"]["StringValue"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                let message = serde_json::from_str(n[1].as_str().unwrap_or("null")).unwrap_or(Value::Null);
                (attribute, message)
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct SentEmail {
    pub subject: String,
    pub body: String,
    pub source: String,
}

impl SentEmail {
    /// The token of the first link to `path` in the email: its `token` query parameter, or
    /// for links that carry it in the fragment, `#token=`.
    pub fn token_for(&self, path: &str) -> Option<String> {
        let (query, fragment) = (format!("{path}?token="), format!("{path}#token="));
        let (at, marker) = [&query, &fragment].into_iter().find_map(|m| Some((self.body.find(m.as_str())?, m)))?;
        let start = at + marker.len();
        let token: String =
            // Opaque tokens are base64url; signed ones (unsubscribe) add the JWT's dots.
            self.body[start..].chars().take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
        Some(token)
    }
}

/// A Lambda function URL event carrying a Stripe delivery of `body` with `signature`.
pub fn webhook_delivery(body: &str, signature: Option<&str>) -> String {
    let mut headers = json!({"content-type": "application/json; charset=utf-8", "user-agent": "Stripe/1.0"});
    if let Some(sig) = signature {
        headers["stripe-signature"] = json!(sig);
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": "/stripe/webhook", "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "anonymous", "apiId": "url", "domainName": "url.lambda-url.us-east-1.on.aws",
            "domainPrefix": "url", "http": {"method": "POST", "path": "/stripe/webhook", "protocol": "HTTP/1.1",
            "sourceIp": "3.18.12.63", "userAgent": "Stripe/1.0"}, "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": "$default", "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0},
        "body": body, "isBase64Encoded": false
    })
    .to_string()
}

/// A Stripe event of `kind` about `object`, created at `created` (epoch seconds).
pub fn stripe_event(kind: &str, created: i64, object: Value) -> String {
    json!({"id": format!("evt_{}", uuid::Uuid::new_v4().simple()), "object": "event", "api_version": "2025-08-27.basil",
        "created": created, "livemode": false, "type": kind, "data": {"object": object}})
    .to_string()
}

/// A connected account's event as Stripe's Connect endpoint sends it: with `account`, the
/// account it is about (`object`'s id, for an account's own events).
pub fn connect_event(kind: &str, created: i64, object: Value) -> String {
    let mut event: Value = serde_json::from_str(&stripe_event(kind, created, object.clone())).expect("an event");
    event["account"] = object["id"].clone();
    event.to_string()
}

/// The platform endpoint's signing secret.
pub fn webhook_secret() -> String {
    std::env::var("STRIPE_WEBHOOK_SECRET").expect("the stack's webhook secret")
}

/// The Connect endpoint's signing secret.
pub fn connect_webhook_secret() -> String {
    std::env::var("STRIPE_CONNECT_WEBHOOK_SECRET").expect("the stack's Connect webhook secret")
}

impl TestApp {
    /// Delivers `body` to the webhook signed as Stripe would: by the Connect endpoint when
    /// the event carries `account`, else by the platform endpoint.
    pub async fn deliver(&self, body: &str) -> TestResponse {
        let now = shared::time::now().unix_timestamp();
        let connected = serde_json::from_str::<Value>(body).is_ok_and(|event| event["account"].is_string());
        let secret = if connected { connect_webhook_secret() } else { webhook_secret() };
        let signature = shared::webhook::signature::sign(body.as_bytes(), &secret, now);
        self.invoke(shared::api::webhook::handle, &webhook_delivery(body, Some(&signature))).await
    }
}

pub fn s(item: &HashMap<String, AttributeValue>, key: &str) -> String {
    match item.get(key) {
        Some(AttributeValue::S(v)) => v.clone(),
        Some(AttributeValue::N(v)) => v.clone(),
        Some(AttributeValue::Bool(v)) => v.to_string(),
        other => panic!("attribute {key} missing or unexpected: {other:?}"),
    }
}

/// The notifier's dead-letter queue (moto's SQS): the bodies of messages sent at or after
/// `since_ms` (epoch milliseconds), waiting (bounded) for at least one.
pub async fn dead_letters_since(since_ms: u128) -> Vec<Value> {
    let queue = std::env::var("NOTIFY_DLQ_URL").expect("the stack's dead-letter queue");
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();
    let client = http_client();
    for _ in 0..300 {
        let answer: Value = client
            .post(&moto)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amz-target", "AmazonSQS.ReceiveMessage")
            .header("authorization", "AWS4-HMAC-SHA256 Credential=testing/20261123/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=0")
            .body(
                json!({"QueueUrl": queue, "MaxNumberOfMessages": 10, "VisibilityTimeout": 0,
                       "AttributeNames": ["SentTimestamp"]})
                .to_string(),
            )
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null);
        let messages: Vec<Value> = answer["Messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| {
                m["Attributes"]["SentTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse::<u128>().ok())
                    .is_some_and(|t| t >= since_ms)
            })
            .filter_map(|m| serde_json::from_str(m["Body"].as_str()?).ok())
            .collect();
        if !messages.is_empty() {
            return messages;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    Vec::new()
}
