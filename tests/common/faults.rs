//! A fault-injecting stand-in in front of DynamoDB Local: an HTTP proxy that forwards every
//! request unchanged, except the ones a test told it to fail. Tests use it to crash a
//! handler between two steps (Stripe done, table write refused) the way a dependency fault
//! would, with the real SDK client on the other side.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Bytes, service::service_fn};

#[derive(Clone)]
struct Rule {
    /// The DynamoDB operation (`TransactWriteItems`, `UpdateItem`, ...).
    operation: String,
    /// A fragment the request body must contain (an attribute value, say).
    body_contains: String,
    times_left: u32,
    /// Never answer (a stalled connection), instead of a 500.
    stall: bool,
}

#[derive(Clone)]
pub struct DynamoFaults {
    url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// How many requests were failed so far.
    failed: Arc<Mutex<u32>>,
    /// Every request seen: (operation, body).
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl DynamoFaults {
    /// Starts a proxy to `upstream` (DynamoDB Local) on a random loopback port.
    pub async fn start(upstream: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("bound"));
        let faults = Self { url, rules: Arc::default(), failed: Arc::default(), seen: Arc::default() };
        let upstream = upstream.trim_end_matches('/').to_owned();
        let client = super::http_client();
        let state = faults.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let (state, client, upstream) = (state.clone(), client.clone(), upstream.clone());
                        async move { Ok::<_, Infallible>(state.handle(req, &client, &upstream).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        faults
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fails the next `times` requests of `operation` whose body contains `body_contains`
    /// with a DynamoDB 500 (the SDK's own retries count too).
    pub fn fail(&self, operation: &str, body_contains: &str, times: u32) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            body_contains: body_contains.to_owned(),
            times_left: times,
            stall: false,
        });
    }

    /// Holds the next `times` requests of `operation` whose body contains `body_contains`
    /// without ever answering: a connection that stalls.
    pub fn stall(&self, operation: &str, body_contains: &str, times: u32) {
        self.rules.lock().unwrap().push(Rule {
            operation: operation.to_owned(),
            body_contains: body_contains.to_owned(),
            times_left: times,
            stall: true,
        });
    }

    /// Stops failing anything.
    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    pub fn failed(&self) -> u32 {
        *self.failed.lock().unwrap()
    }

    /// How many requests of `operation` whose body contains `body_contains` went through so
    /// far (failed ones included), so a test can count what a request cost.
    pub fn seen(&self, operation: &str, body_contains: &str) -> usize {
        self.seen.lock().unwrap().iter().filter(|(op, body)| op == operation && body.contains(body_contains)).count()
    }

    async fn handle(
        &self,
        req: Request<hyper::body::Incoming>,
        client: &reqwest::Client,
        upstream: &str,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let operation = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default()
            .to_owned();
        let text = String::from_utf8_lossy(&body);
        self.seen.lock().unwrap().push((operation.clone(), text.clone().into_owned()));
        let injected = {
            let mut rules = self.rules.lock().unwrap();
            match rules
                .iter_mut()
                .find(|r| r.times_left > 0 && r.operation == operation && text.contains(r.body_contains.as_str()))
            {
                Some(rule) => {
                    rule.times_left -= 1;
                    Some(rule.stall)
                }
                None => None,
            }
        };
        if injected == Some(true) {
            *self.failed.lock().unwrap() += 1;
            std::future::pending::<()>().await;
        }
        if injected.is_some() {
            *self.failed.lock().unwrap() += 1;
            return Response::builder()
                .status(500)
                .header("content-type", "application/x-amz-json-1.0")
                .body(Full::new(Bytes::from_static(
                    br#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"injected by the test"}"#,
                )))
                .unwrap();
        }
        let uri = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut forward = client.request(parts.method.clone(), format!("{upstream}{uri}")).body(body.to_vec());
        for (name, value) in &parts.headers {
            if name != "host" && name != "content-length" {
                forward = forward.header(name, value);
            }
        }
        let answer = match forward.send().await {
            Ok(answer) => answer,
            Err(error) => {
                return Response::builder().status(502).body(Full::new(Bytes::from(error.to_string()))).unwrap();
            }
        };
        let mut response = Response::builder().status(answer.status());
        for (name, value) in answer.headers() {
            if name != "content-length" && name != "transfer-encoding" && name != "connection" {
                response = response.header(name, value);
            }
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        response.body(Full::new(bytes)).unwrap()
    }
}

/// Sends DynamoDB to `url` and every other service where the environment says.
#[derive(Debug)]
pub struct DynamoVia(pub String);

impl aws_types::service_config::LoadServiceConfig for DynamoVia {
    fn load_config(&self, key: aws_types::service_config::ServiceConfigKey<'_>) -> Option<String> {
        if key.service_id() == "DynamoDB" && key.env() == "AWS_ENDPOINT_URL" {
            return Some(self.0.clone());
        }
        std::env::var(format!("{}_{}", key.env(), key.service_id().to_uppercase().replace(' ', "_"))).ok()
    }
}
