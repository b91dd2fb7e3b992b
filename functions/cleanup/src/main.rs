//! `cleanup`: the hourly scheduled job (EventBridge rule or EventBridge Scheduler; the
//! payload is only logged, so `events/cleanup.json`, `cargo lambda invoke` and
//! `sam local invoke` work alike). Answers the run's counts.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::{cleanup, deadline::Deadline, http::RequestMeta, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Leaked on purpose: it lives as long as the process, and every run borrows it.
    let parts = &[Part::Stripe, Part::Outbox];
    let app: &'static shared::App = Box::leak(Box::new(shared::App::from_env(parts).await?));
    app.check_secrets().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let source = event.payload["source"].as_str().unwrap_or("invoke").to_owned();
        tracing::info!(%source, "cleanup run starting");
        let meta = RequestMeta {
            request_id: event.context.request_id.clone(),
            lambda_request_id: Some(event.context.request_id.clone()),
            deadline: Deadline::from_epoch_ms(event.context.deadline),
            ..RequestMeta::default()
        };
        let summary = cleanup::run(app, &meta).await;
        Ok::<Value, lambda_runtime::Error>(serde_json::to_value(summary)?)
    }))
    .await
}
