//! `notify`: delivers outbox items from the table's DynamoDB stream (an event source mapping
//! with `ReportBatchItemFailures`): email through SES, SMS and events through SNS.

use aws_lambda_events::event::{dynamodb::Event, streams::DynamoDbEventResponse};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::telemetry::init();
    // Leaked on purpose: it lives as long as the process, and every batch borrows it.
    let app: &'static shared::App = Box::leak(Box::new(shared::App::from_env().await?));
    lambda_runtime::run(service_fn(|event: LambdaEvent<Event>| async move {
        Ok::<DynamoDbEventResponse, lambda_runtime::Error>(
            shared::notify::delivery::handle_batch(app, event.payload).await,
        )
    }))
    .await
}
