//! A bare `lambda_http` hello world, built with the functions' release profile: the yardstick
//! of `infra/bench-cold-start.py`. At init it builds what every function builds (the SDK
//! configuration and a DynamoDB client). Each request makes the DynamoDB calls named in
//! `BASELINE_CALLS` on `TABLE_NAME`, on an item of its own, then answers "hello": operation
//! names, `,` between calls made one after another and `+` between calls made at once (the
//! benchmark gives it the calls the function it is compared with made, as it made them).

use aws_sdk_dynamodb::{
    Client,
    types::{AttributeValue, Put, TransactWriteItem},
};
use futures_util::future::try_join_all;
use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb: &'static Client = Box::leak(Box::new(Client::new(&sdk)));
    let table: &'static str = std::env::var("TABLE_NAME").unwrap_or_default().leak();
    let calls: &'static [Vec<String>] = std::env::var("BASELINE_CALLS")
        .unwrap_or_default()
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|together| together.split('+').map(str::to_owned).collect())
        .collect::<Vec<_>>()
        .leak();
    lambda_http::run(service_fn(move |_: Request| async move {
        for together in calls {
            try_join_all(together.iter().map(|call| make(dynamodb, table, call))).await?;
        }
        Ok::<_, Error>(Response::new(Body::from("hello")))
    }))
    .await
}

/// One call of the kind `operation`, on the baseline's own item.
async fn make(dynamodb: &Client, table: &str, operation: &str) -> Result<(), Error> {
    let pk = || AttributeValue::S("BASELINE".into());
    let sk = || AttributeValue::S("BASELINE".into());
    match operation {
        "GetItem" => {
            dynamodb.get_item().table_name(table).key("PK", pk()).key("SK", sk()).consistent_read(true).send().await?;
        }
        "Query" => {
            dynamodb
                .query()
                .table_name(table)
                .key_condition_expression("PK = :pk")
                .expression_attribute_values(":pk", pk())
                .limit(25)
                .send()
                .await?;
        }
        "PutItem" => {
            dynamodb.put_item().table_name(table).item("PK", pk()).item("SK", sk()).send().await?;
        }
        "UpdateItem" => {
            dynamodb
                .update_item()
                .table_name(table)
                .key("PK", pk())
                .key("SK", sk())
                .update_expression("ADD n :one")
                .expression_attribute_values(":one", AttributeValue::N("1".into()))
                .send()
                .await?;
        }
        "DeleteItem" => {
            dynamodb.delete_item().table_name(table).key("PK", pk()).key("SK", sk()).send().await?;
        }
        "TransactWriteItems" => {
            let put = Put::builder().table_name(table).item("PK", pk()).item("SK", sk()).build()?;
            dynamodb
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(put).build())
                .send()
                .await?;
        }
        other => return Err(format!("the baseline makes no {other} calls").into()),
    }
    Ok(())
}
