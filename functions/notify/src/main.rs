//! `notify`: the notifier. Two triggers, as in template.yaml: the table's DynamoDB stream
//! (outbox items, through an event source mapping with `ReportBatchItemFailures`), delivered
//! by email (SES), SMS, push and events (SNS); and the SES feedback topic (SNS), whose
//! bounces and complaints suppress addresses.

use aws_lambda_events::event::dynamodb;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use shared::{notify::delivery::SnsEvent, secrets::Part};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Leaked on purpose: it lives as long as the process, and every batch borrows it.
    let parts = &[Part::Outbox, Part::Unsubscribe];
    let app: &'static shared::App = Box::leak(Box::new(shared::App::from_env(parts).await?));
    app.check_secrets().await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| async move {
        let payload = event.payload;
        // SNS records say `EventSource`, stream records `eventSource`.
        if payload["Records"][0]["EventSource"] == "aws:sns" {
            let event: SnsEvent = serde_json::from_value(payload)?;
            shared::notify::delivery::handle_feedback(app, event).await?;
            return Ok(Value::Null);
        }
        let batch: dynamodb::Event = serde_json::from_value(payload)?;
        Ok::<Value, lambda_runtime::Error>(serde_json::to_value(
            shared::notify::delivery::handle_batch(app, batch).await,
        )?)
    }))
    .await
}
