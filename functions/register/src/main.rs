//! `register`: POST /auth/register.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    shared::app::run_http(shared::api::register::handle).await
}
