//! The production guards against a real Secrets Manager (moto): a production function
//! that uses the secret must not start with a missing, placeholder or weak one.

mod common;

use shared::{App, config::Settings};

/// A production app on `secret`, with CAPTCHA off accepted (the stack's secret has none).
async fn production_app_with_secret(secret: Option<&str>) -> App {
    production_app(secret, &[("CAPTCHA_OFF_ACCEPTED", "true")]).await
}

async fn production_app(secret: Option<&str>, overrides: &[(&str, &str)]) -> App {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let name = format!("guard-test/{}", uuid::Uuid::new_v4().simple());
    if let Some(value) = secret {
        aws_sdk_secretsmanager::Client::new(&sdk)
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .expect("moto creates the secret");
    }
    let overrides: std::collections::HashMap<String, String> =
        overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let settings = Settings::from_lookup(|key| match key {
        _ if overrides.contains_key(key) => overrides.get(key).cloned(),
        "ENVIRONMENT" => Some("production".into()),
        "FRONTEND_URL" => Some("https://app.example.com".into()),
        "JWT_ISSUER" => Some("https://api.example.com".into()),
        "EVENTS_TOPIC_ARN" => std::env::var("EVENTS_TOPIC_ARN").ok(),
        "SECRET_ID" => Some(name.clone()),
        other => std::env::var(other).ok(),
    })
    .expect("production settings");
    App::new(settings, sdk)
}

/// The secret the local stack generated for this machine.
async fn generated_secret() -> String {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id(std::env::var("SECRET_ID").unwrap())
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap()
}

#[tokio::test]
async fn production_refuses_a_missing_placeholder_or_weak_secret() {
    let _ = common::TestApp::new().await; // checks the stack is there
    let cases = [
        None,
        Some("{}"),
        Some(
            r#"{"jwt_signing_keys":[{"kid":"k1","private_key_pem":"CHANGEME"}],"stripe_webhook_secrets":["whsec_CHANGEME"]}"#,
        ),
    ];
    for secret in cases {
        let app = production_app_with_secret(secret).await;
        assert!(app.check_secrets().await.is_err(), "{secret:?} must be refused");
    }
}

#[tokio::test]
async fn production_accepts_the_strong_secret_the_stack_generated() {
    let _ = common::TestApp::new().await;
    let generated = generated_secret().await;
    let app = production_app_with_secret(Some(&generated)).await;
    app.check_secrets().await.expect("a 2048-bit key and a long webhook secret pass");
    let secrets = app.secrets().get().await.unwrap();
    assert_eq!(secrets.jwt_signing_keys.len(), 1);
}

#[tokio::test]
async fn production_payment_functions_refuse_to_start_without_a_stripe_key() {
    use shared::app::Secrets;
    let _ = common::TestApp::new().await;
    let generated = generated_secret().await;
    let app = production_app_with_secret(Some(&generated)).await;
    assert!(app.check_secrets_for(Secrets::Required).await.is_ok());
    // Without a webhook secret, every function that reads the secret refuses to start.
    let mut no_webhook: serde_json::Value = serde_json::from_str(&generated).unwrap();
    no_webhook["stripe_webhook_secrets"] = serde_json::json!([]);
    let app_without = production_app_with_secret(Some(&no_webhook.to_string())).await;
    assert!(app_without.check_secrets().await.is_err(), "no webhook secret");
    // Nor without the Connect endpoint's: providers would never be onboarded.
    let mut no_connect: serde_json::Value = serde_json::from_str(&generated).unwrap();
    no_connect["stripe_connect_webhook_secrets"] = serde_json::json!([]);
    let app_without = production_app_with_secret(Some(&no_connect.to_string())).await;
    let error = app_without.check_secrets().await.expect_err("no Connect webhook secret");
    assert!(error.to_string().contains("stripe_connect_webhook_secrets"), "{error}");
    assert!(app.check_secrets_for(Secrets::RequiredWithStripe).await.is_err(), "no Stripe key");

    let mut with_key: serde_json::Value = serde_json::from_str(&generated).unwrap();
    with_key["stripe_secret_key"] = serde_json::json!("sk_live_51Qx7Vt2LmNp8RsT4uWyZa1Bc3De5Fg7Hi9");
    let app = production_app_with_secret(Some(&with_key.to_string())).await;
    assert!(app.check_secrets_for(Secrets::RequiredWithStripe).await.is_ok());
    with_key["stripe_secret_key"] = serde_json::json!("sk_live_CHANGEME_placeholder_value");
    let app = production_app_with_secret(Some(&with_key.to_string())).await;
    assert!(app.check_secrets_for(Secrets::RequiredWithStripe).await.is_err(), "placeholder key");
}

#[tokio::test]
async fn production_refuses_to_start_without_captcha_unless_the_risk_is_accepted() {
    let _ = common::TestApp::new().await;
    let generated = generated_secret().await;
    let refused = production_app(Some(&generated), &[]).await;
    let error = refused.check_secrets().await.expect_err("no CAPTCHA, risk not accepted");
    assert!(error.to_string().contains("captcha_secret"), "{error}");
    let accepted = production_app(Some(&generated), &[("CAPTCHA_OFF_ACCEPTED", "true")]).await;
    accepted.check_secrets().await.expect("the risk accepted in so many words");

    let mut with_captcha: serde_json::Value = serde_json::from_str(&generated).unwrap();
    with_captcha["captcha_secret"] = serde_json::json!("0x4AAAAAAA-a-turnstile-secret-key");
    let app = production_app(Some(&with_captcha.to_string()), &[]).await;
    app.check_secrets().await.expect("CAPTCHA configured");
}
