//! Serves the Stripe stand-in on 127.0.0.1:$STRIPE_STAND_IN_PORT (default 12111) for the
//! local stack, until stopped.

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("STRIPE_STAND_IN_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(12111);
    let stand_in = stripe_stand_in::StripeStandIn::start_on(port).await?;
    eprintln!("Stripe STAND-IN (not Stripe) listening at {}", stand_in.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
