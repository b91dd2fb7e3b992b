//! The secrets against a real Secrets Manager (moto): a production function must not start
//! with a missing, placeholder or weak secret among the ones it reads; it reads only the
//! ones it declares; a secret holds only its own fields; and a rotated secret is read again.

use crate::common;

use serde_json::json;
use shared::{
    App,
    config::{ConfigError, Settings},
    secrets::Part,
};

/// A secret holding `document`; its name.
async fn secret(document: &serde_json::Value) -> String {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let name = format!("guard-test/{}", uuid::Uuid::new_v4().simple());
    aws_sdk_secretsmanager::Client::new(&sdk)
        .create_secret()
        .name(&name)
        .secret_string(document.to_string())
        .send()
        .await
        .expect("moto creates the secret");
    name
}

/// The document the local stack generated for `part`.
async fn generated(part: Part) -> serde_json::Value {
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let value = aws_sdk_secretsmanager::Client::new(&sdk)
        .get_secret_value()
        .secret_id(std::env::var(part.env()).expect("the stack names every secret"))
        .send()
        .await
        .unwrap()
        .secret_string
        .unwrap();
    serde_json::from_str(&value).unwrap()
}

/// An app of a function reading `parts`, in `environment`, with the stack's secrets except
/// `overrides` (a variable set to "" is unset).
async fn app_in(environment: &str, parts: &'static [Part], overrides: &[(&str, &str)]) -> App {
    let _ = common::TestApp::new().await; // checks the stack is there
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let overrides: std::collections::HashMap<String, String> =
        overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let environment = environment.to_owned();
    let settings = Settings::from_lookup(|key| match key {
        _ if overrides.contains_key(key) => overrides.get(key).cloned(),
        "ENVIRONMENT" => Some(environment.clone()),
        "FRONTEND_URL" => Some("https://app.example.com".into()),
        "JWT_ISSUER" => Some("https://api.example.com".into()),
        // Production refuses no fee (unit-tested in shared/src/config/).
        "PLATFORM_FEE_BPS" => Some("1000".into()),
        other => std::env::var(other).ok(),
    })
    .expect("settings");
    App::new(settings, sdk).reading(parts)
}

async fn production(parts: &'static [Part], overrides: &[(&str, &str)]) -> App {
    app_in("production", parts, overrides).await
}

fn refused_for(error: ConfigError, field: &str) {
    assert!(error.to_string().contains(field), "refused, but not for {field}: {error}");
}

#[tokio::test]
async fn production_accepts_the_strong_secrets_the_stack_generated() {
    // Every part but the Stripe key, which the test stack leaves empty.
    let parts = &[
        Part::PublicKeys,
        Part::Signing,
        Part::Webhook,
        Part::Mfa,
        Part::Outbox,
        Part::Idempotency,
        Part::Unsubscribe,
        Part::Cursor,
    ];
    let app = production(parts, &[]).await;
    app.check_secrets().await.expect("2048-bit keys, long webhook secrets, random sealing keys pass");
    let secrets = app.secrets().get().await.unwrap();
    assert_eq!((secrets.jwt_signing_keys.len(), secrets.jwt_public_keys.len()), (1, 1));
}

#[tokio::test]
async fn production_refuses_a_missing_placeholder_or_weak_secret() {
    let parts = &[Part::PublicKeys, Part::Signing];
    let unset = production(parts, &[("SIGNING_SECRET_ID", "")]).await;
    assert!(matches!(unset.check_secrets().await, Err(ConfigError::Missing("SIGNING_SECRET_ID"))));
    let gone = production(parts, &[("SIGNING_SECRET_ID", "guard-test/never-created")]).await;
    assert!(matches!(gone.check_secrets().await, Err(ConfigError::SecretUnavailable { .. })));

    let empty = secret(&json!({})).await;
    refused_for(
        production(parts, &[("SIGNING_SECRET_ID", &empty)]).await.check_secrets().await.unwrap_err(),
        "jwt_signing_keys",
    );
    let placeholder = secret(&json!({"jwt_signing_keys": [{"kid": "k1", "private_key_pem": "CHANGEME"}]})).await;
    refused_for(
        production(parts, &[("SIGNING_SECRET_ID", &placeholder)]).await.check_secrets().await.unwrap_err(),
        "jwt_signing_keys",
    );
    // Without the Connect endpoint's secret no provider would ever be onboarded.
    let mut webhook = generated(Part::Webhook).await;
    webhook["stripe_connect_webhook_secrets"] = json!([]);
    let webhook = secret(&webhook).await;
    refused_for(
        production(&[Part::Webhook], &[("WEBHOOK_SECRET_ID", &webhook)]).await.check_secrets().await.unwrap_err(),
        "stripe_connect_webhook_secrets",
    );
}

#[tokio::test]
async fn production_payment_functions_refuse_to_start_without_a_stripe_key() {
    let parts = &[Part::Stripe, Part::Outbox];
    let empty = secret(&json!({})).await;
    refused_for(
        production(parts, &[("STRIPE_SECRET_ID", &empty)]).await.check_secrets().await.unwrap_err(),
        "stripe_secret_key",
    );
    let placeholder = secret(&json!({"stripe_secret_key": "sk_live_CHANGEME_placeholder_value"})).await;
    refused_for(
        production(parts, &[("STRIPE_SECRET_ID", &placeholder)]).await.check_secrets().await.unwrap_err(),
        "stripe_secret_key",
    );
    let key = secret(&json!({"stripe_secret_key": "sk_live_51Qx7Vt2LmNp8RsT4uWyZa1Bc3De5Fg7Hi9"})).await;
    production(parts, &[("STRIPE_SECRET_ID", &key)]).await.check_secrets().await.expect("a Stripe key");
}

#[tokio::test]
async fn a_function_reads_only_the_secrets_it_declares() {
    // The register function's parts. Every other secret is unreadable here: it must not care.
    let parts = &[Part::Captcha, Part::Outbox];
    let elsewhere: Vec<(&str, &str)> = Part::ALL
        .iter()
        .filter(|part| !parts.contains(part))
        .map(|part| (part.env(), "guard-test/never-created"))
        .collect();
    let app = production(parts, &[elsewhere.as_slice(), &[("CAPTCHA_OFF_ACCEPTED", "true")]].concat()).await;
    app.check_secrets().await.expect("starts on its own secrets");
    let secrets = app.secrets().get().await.unwrap();
    assert!(!secrets.outbox_sealing_keys.is_empty());
    assert!(secrets.jwt_public_keys.is_empty() && secrets.stripe_webhook_secrets.is_empty());

    // Outside production too: what is not declared is not read, whatever the environment says.
    let verifier = app_in("development", &[Part::PublicKeys], &[]).await;
    let secrets = verifier.secrets().get().await.unwrap();
    assert!(!secrets.jwt_public_keys.is_empty());
    assert!(secrets.jwt_signing_keys.is_empty(), "a verifier never holds a private key");
    assert!(verifier.keys().await.unwrap().sign(&sample_claims()).is_err(), "and cannot sign");
}

fn sample_claims() -> shared::identity::jwt::AccessClaims {
    serde_json::from_value(json!({
        "iss": "https://api.example.com", "aud": "backend-api", "sub": "u", "org": "o", "role": "admin",
        "sid": "s", "iat": 0, "exp": 1, "jti": "j", "token_use": "access", "csrf": "c", "sv": 0
    }))
    .unwrap()
}

#[tokio::test]
async fn a_secret_holding_another_secrets_field_is_refused_in_every_environment() {
    let mut public_keys = generated(Part::PublicKeys).await;
    public_keys["stripe_secret_key"] = json!("sk_live_51Qx7Vt2LmNp8RsT4uWyZa1Bc3De5Fg7Hi9");
    let misplaced = secret(&public_keys).await;
    for environment in ["production", "development"] {
        let app = app_in(environment, &[Part::PublicKeys], &[("PUBLIC_KEYS_SECRET_ID", &misplaced)]).await;
        let error = app.secrets().get().await.unwrap_err();
        assert!(matches!(error, ConfigError::MisplacedSecret { .. }), "{environment}: {error}");
        let shown = error.to_string();
        assert!(shown.contains("STRIPE_SECRET_ID") && !shown.contains("sk_live"), "{shown}");
    }
}

#[tokio::test]
async fn production_refuses_to_start_without_captcha_unless_the_risk_is_accepted() {
    let parts = &[Part::Captcha];
    let empty = secret(&json!({})).await;
    let refused = production(parts, &[("CAPTCHA_SECRET_ID", &empty)]).await;
    refused_for(refused.check_secrets().await.unwrap_err(), "captcha_secret");
    let accepted = production(parts, &[("CAPTCHA_SECRET_ID", &empty), ("CAPTCHA_OFF_ACCEPTED", "true")]).await;
    accepted.check_secrets().await.expect("the risk accepted in so many words");
    let captcha = secret(&json!({"captcha_secret": "0x4AAAAAAA-a-turnstile-secret-key"})).await;
    production(parts, &[("CAPTCHA_SECRET_ID", &captcha)]).await.check_secrets().await.expect("CAPTCHA configured");
}

#[tokio::test]
async fn a_rotated_key_is_read_again_and_what_the_old_key_sealed_still_opens() {
    let before = generated(Part::Outbox).await;
    let name = secret(&before).await;
    let overrides = [("OUTBOX_SECRET_ID", name.as_str()), ("SECRET_REFRESH_SECONDS", "0")];
    let app = app_in("development", &[Part::Outbox], &overrides).await;
    let sealed = app.outbox_sealer().await.unwrap().seal(b"https://app/reset#token=t", "item-1").unwrap();

    // Rotation: the new key first, the old one kept while anything it sealed is kept.
    let new_key = json!({"kid": "rotated", "key": base64_of_random_32()});
    let rotated = json!({"outbox_sealing_keys": [new_key, before["outbox_sealing_keys"][0]]});
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&sdk)
        .put_secret_value()
        .secret_id(&name)
        .secret_string(rotated.to_string())
        .send()
        .await
        .unwrap();
    let sealer = app.outbox_sealer().await.unwrap();
    assert!(sealer.seal(b"x", "item-2").unwrap().starts_with("rotated:"), "the new key seals");
    assert_eq!(sealer.open(&sealed, "item-1").unwrap(), b"https://app/reset#token=t", "the old key still opens");
}

fn base64_of_random_32() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> =
        uuid::Uuid::new_v4().into_bytes().into_iter().chain(uuid::Uuid::new_v4().into_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
