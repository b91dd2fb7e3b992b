//! Providers: users paid through a Stripe Express connected account.
//!
//! One provider per user, held by a `USER#{id}` / `PROVIDER` guard item. The account is
//! created with the idempotency key `account:{provider_id}`, so concurrent or retried
//! calls all end with the same Stripe account. Onboarding flags are written by the
//! webhook (`account.updated`, from the Connect endpoint), and re-read from Stripe when a
//! release finds them off ([`Provider::recheck_onboarding`]), so a missed event never blocks
//! payouts for good.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::gateway::Stripe;
use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::{Role, auth::Principal},
    invalid::FieldError,
    payments::PaymentError,
    payments::PaymentServices,
    services::Services,
    store::{Change, StoreError, av, keys},
    time,
};

const SK: &str = "PROVIDER";
/// How often a release may ask Stripe about a provider whose flags are off: a missed
/// `account.updated` delays payouts by a minute at most, and callers retrying a refused
/// release cannot spend the platform's Stripe rate limit on one account.
pub const ONBOARDING_RECHECK_SECONDS: i64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Provider {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    pub provider_id: String,
    pub user_id: String,
    pub org_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stripe_account_id: Option<String>,
    pub charges_enabled: bool,
    pub payouts_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub business_type: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProviderGuard {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    provider_id: String,
}

/// Validated input of `POST /providers`.
#[derive(Debug, Default)]
pub struct ProviderInput {
    pub country: Option<String>,
    pub business_type: Option<String>,
    pub phone: Option<String>,
}

/// The officially assigned ISO 3166-1 alpha-2 codes.
const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ", "BA", "BB", "BD",
    "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS", "BT", "BV", "BW", "BY", "BZ", "CA",
    "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN", "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE",
    "DJ", "DK", "DM", "DO", "DZ", "EC", "EE", "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA",
    "GB", "GD", "GE", "GF", "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK",
    "HM", "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM", "JO", "JP",
    "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC", "LI", "LK", "LR", "LS", "LT",
    "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK", "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS",
    "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA", "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ",
    "OM", "PA", "PE", "PF", "PG", "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS",
    "RU", "RW", "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS", "ST",
    "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO", "TR", "TT", "TV", "TW",
    "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI", "VN", "VU", "WF", "WS", "YE", "YT", "ZA",
    "ZM", "ZW",
];

impl ProviderInput {
    pub fn parse(
        country: Option<String>,
        business_type: Option<String>,
        phone: Option<String>,
    ) -> Result<Self, PaymentError> {
        let mut errors = Vec::new();
        if let Some(c) = &country
            && !ISO_3166_ALPHA2.contains(&c.as_str())
        {
            errors.push(FieldError::new("country", "must be an ISO 3166-1 alpha-2 code such as \"US\""));
        }
        if let Some(b) = &business_type
            && !matches!(b.as_str(), "individual" | "company" | "non_profit" | "government_entity")
        {
            errors
                .push(FieldError::new("business_type", "must be individual, company, non_profit or government_entity"));
        }
        let phone = match phone.as_deref().map(crate::identity::phone::Phone::parse) {
            Some(Ok(phone)) => Some(phone.as_str().to_owned()),
            Some(Err(message)) => {
                errors.push(FieldError::new("phone", message));
                None
            }
            None => None,
        };
        if errors.is_empty() {
            Ok(Self { country, business_type, phone })
        } else {
            Err(PaymentError::Validation(errors))
        }
    }
}

impl Provider {
    pub fn key(provider_id: &str) -> String {
        format!("PROVIDER#{provider_id}")
    }

    pub async fn find(app: &Services, provider_id: &str) -> Result<Option<Provider>, StoreError> {
        app.table().get(&Self::key(provider_id), SK).await
    }

    /// Whether transfers to this provider can be made.
    pub fn payout_destination(&self) -> Option<&str> {
        self.stripe_account_id.as_deref().filter(|_| self.payouts_enabled)
    }

    /// The provider with its flags as Stripe holds them now, when they are off here and the
    /// last look at Stripe is a minute old or more (the look is claimed first, so concurrent
    /// releases ask once); otherwise the provider as it is. The flags read are written in
    /// event order: an `account.updated` created after the read wins.
    pub async fn recheck_onboarding(self, app: &Services, stripe: &Stripe) -> Result<Provider, PaymentError> {
        let Some(account) = self.stripe_account_id.clone().filter(|_| !self.payouts_enabled) else {
            return Ok(self);
        };
        let pk = Self::key(&self.provider_id);
        let read_at = time::now().unix_timestamp();
        let claim = Change::new(&pk, SK)
            .update("SET account_checked_at = :now")
            .condition(
                "attribute_exists(PK) AND (attribute_not_exists(account_checked_at) OR account_checked_at <= :due)",
            )
            .value(":now", av::n(read_at))
            .value(":due", av::n(read_at - ONBOARDING_RECHECK_SECONDS));
        match app.table().update_item(claim).await {
            Ok(_) => {}
            Err(StoreError::ConditionFailed) => return Ok(self),
            Err(other) => return Err(other.into()),
        }
        let flags = stripe.account_flags(&account).await?;
        tracing::info!(provider_id = %self.provider_id, ?flags, "onboarding flags re-read from Stripe");
        let write = Change::new(&pk, SK)
            .update("SET charges_enabled = :charges, payouts_enabled = :payouts, account_event_created = :read_at, updated_at = :at")
            .condition("attribute_exists(PK) AND (attribute_not_exists(account_event_created) OR account_event_created <= :read_at)")
            .value(":charges", av::b(flags.charges_enabled))
            .value(":payouts", av::b(flags.payouts_enabled))
            .value(":read_at", av::n(read_at))
            .value(":at", av::s(time::rfc3339(time::now())));
        match app.table().update_item(write).await {
            Ok(item) => Ok(serde_dynamo::from_item(item).map_err(StoreError::from)?),
            // An event newer than the read got there first: it is the truth.
            Err(StoreError::ConditionFailed) => Ok(Self::find(app, &self.provider_id)
                .await?
                .ok_or_else(|| PaymentError::internal("provider missing"))?),
            Err(other) => Err(other.into()),
        }
    }

    pub fn body(&self, onboarding_url: Option<&str>) -> serde_json::Value {
        let mut body = json!({
            "provider_id": self.provider_id,
            "user_id": self.user_id,
            "stripe_account_id": self.stripe_account_id,
            "charges_enabled": self.charges_enabled,
            "payouts_enabled": self.payouts_enabled,
            "country": self.country,
            "business_type": self.business_type,
            "phone": self.phone,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        });
        if let Some(url) = onboarding_url {
            body["onboarding_url"] = json!(url);
        }
        body
    }
}

/// Creates the caller's provider and connected account, or finds them; either way with a
/// fresh onboarding link.
pub async fn create_or_refresh(
    app: &PaymentServices,
    principal: &Principal,
    input: ProviderInput,
    meta: &RequestMeta,
) -> Result<(Provider, String), PaymentError> {
    let gateway = app.stripe(meta.deadline).await?;
    let table = app.table();
    let user_pk = keys::user(principal.user_id());
    let provider_id = match table.get::<ProviderGuard>(&user_pk, SK).await? {
        Some(guard) => guard.provider_id,
        None => {
            let now = time::rfc3339(time::now());
            let provider = Provider {
                pk: Provider::key(&uuid::Uuid::new_v4().to_string()),
                sk: SK.to_owned(),
                provider_id: String::new(),
                user_id: principal.user_id().to_owned(),
                org_id: principal.org_id().to_owned(),
                stripe_account_id: None,
                charges_enabled: false,
                payouts_enabled: false,
                phone: input.phone.clone(),
                country: input.country.clone(),
                business_type: input.business_type.clone(),
                created_at: now.clone(),
                updated_at: now,
            };
            let provider_id = provider.pk.trim_start_matches("PROVIDER#").to_owned();
            let provider = Provider { provider_id: provider_id.clone(), ..provider };
            let guard = ProviderGuard { pk: user_pk.clone(), sk: SK.to_owned(), provider_id: provider_id.clone() };
            let audit = AuditEntry::new("provider.created", AuditStatus::Success, principal.org_id(), meta)
                .actor(principal.user_id())
                .details(json!({ "provider_id": provider_id }));
            let items = vec![table.put_new(&guard)?, table.put_new(&provider)?, app.audit().put(&audit)?];
            match table.transact(items).await {
                Ok(()) => provider_id,
                // Another request made it first: use theirs.
                Err(StoreError::TransactionConditionsFailed(_)) => {
                    table
                        .get::<ProviderGuard>(&user_pk, SK)
                        .await?
                        .ok_or_else(|| PaymentError::internal("provider guard vanished"))?
                        .provider_id
                }
                Err(other) => return Err(other.into()),
            }
        }
    };
    let mut provider =
        Provider::find(app, &provider_id).await?.ok_or_else(|| PaymentError::internal("provider item missing"))?;
    if provider.stripe_account_id.is_none() {
        let account = gateway
            .create_account(
                &format!("account:{provider_id}"),
                provider.country.as_deref(),
                provider.business_type.as_deref(),
                &principal.user.email,
                &provider_id,
            )
            .await?;
        let pk = Provider::key(&provider_id);
        let gsi = format!("ACCOUNT#{account}");
        match table
            .update_item(
                Change::new(&pk, SK)
                    .update("SET stripe_account_id = :account, GSI1PK = :gsi, GSI1SK = :sk, updated_at = :now")
                    .condition("attribute_not_exists(stripe_account_id) OR stripe_account_id = :account")
                    .value(":account", av::s(&account))
                    .value(":gsi", av::s(&gsi))
                    .value(":sk", av::s(SK))
                    .value(":now", av::s(time::rfc3339(time::now()))),
            )
            .await
        {
            Ok(_) | Err(StoreError::ConditionFailed) => {}
            Err(other) => return Err(other.into()),
        }
        provider =
            Provider::find(app, &provider_id).await?.ok_or_else(|| PaymentError::internal("provider item missing"))?;
    }
    let account =
        provider.stripe_account_id.clone().ok_or_else(|| PaymentError::internal("provider without account"))?;
    let base = &app.settings().frontend_url;
    let url = gateway
        .create_account_link(
            &account,
            &format!("{base}/providers/onboarding/refresh"),
            &format!("{base}/providers/onboarding/return"),
        )
        .await?;
    Ok((provider, url))
}

/// A provider as its owner or an admin of the owner's organisation sees it; anyone else
/// gets 404.
pub async fn get(app: &Services, principal: &Principal, provider_id: &str) -> Result<Provider, PaymentError> {
    let provider = Provider::find(app, provider_id).await?.ok_or(PaymentError::NotFound)?;
    let owner = provider.user_id == principal.user_id();
    let org_admin = provider.org_id == principal.org_id() && principal.role() == Role::Admin;
    if owner || org_admin { Ok(provider) } else { Err(PaymentError::NotFound) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_input_is_validated() {
        assert!(
            ProviderInput::parse(Some("US".into()), Some("individual".into()), Some("+14155550123".into())).is_ok()
        );
        assert!(ProviderInput::parse(None, None, None).is_ok());
        match ProviderInput::parse(Some("usa".into()), Some("llc".into()), Some("555-0123".into())) {
            Err(PaymentError::Validation(errors)) => assert_eq!(errors.len(), 3),
            other => panic!("{other:?}"),
        }
    }
}
