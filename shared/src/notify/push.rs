//! Mobile push through SNS platform endpoints (FCM, APNs): a user's devices, and sending
//! one notification to all of them.
//!
//! Item: `PK = USER#{id}`, `SK = DEVICE#{device_id}`, holding the endpoint's ARN. The
//! device id is derived from the user, platform and token, so registering the same device
//! again answers the same id and changes nothing.

use aws_sdk_sns::error::{DisplayErrorContext, ProvideErrorMetadata};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Channels, NotifyError};
use crate::{
    invalid::{FieldError, Invalid},
    services::Services,
    store::{Change, StoreError, Table, av, dynamo_error, keys},
    time,
};

const DEVICE_PREFIX: &str = "DEVICE#";
/// FCM registration tokens are ~160 characters, APNs device tokens 64 hex digits; SNS takes
/// tokens up to this size.
pub const MAX_TOKEN_LEN: usize = 1024;
/// Enough for every phone and tablet a person uses; more is a client registering in a loop.
pub const MAX_DEVICES: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Fcm,
    Apns,
}

impl Platform {
    fn parse(value: Option<&str>) -> Result<Self, FieldError> {
        match value {
            Some("fcm") => Ok(Self::Fcm),
            Some("apns") => Ok(Self::Apns),
            Some(_) => Err(FieldError::new("platform", "must be \"fcm\" or \"apns\"")),
            None => Err(FieldError::new("platform", "is required")),
        }
    }

    fn application_arn(self, app: &Services) -> Option<&str> {
        match self {
            Self::Fcm => app.settings().push_fcm_application_arn.as_deref(),
            Self::Apns => app.settings().push_apns_application_arn.as_deref(),
        }
    }
}

/// A push token that has passed validation.
#[derive(Debug, Clone)]
pub struct DeviceToken {
    platform: Platform,
    token: String,
}

/// Why a device was not registered or removed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// The user has [`MAX_DEVICES`] already.
    #[error("a user has at most {MAX_DEVICES} devices; remove one first")]
    TooMany,
    #[error("no such device")]
    NotFound,
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DeviceToken {
    pub fn parse(platform: Option<&str>, token: Option<&str>) -> Result<Self, Invalid> {
        let mut errors = Vec::new();
        let platform = Platform::parse(platform).map_err(|e| errors.push(e)).ok();
        let token = match token.map(str::trim) {
            None | Some("") => {
                errors.push(FieldError::new("token", "is required"));
                None
            }
            Some(t) if t.len() > MAX_TOKEN_LEN => {
                errors.push(FieldError::new("token", format!("must be at most {MAX_TOKEN_LEN} characters")));
                None
            }
            Some(t) if !t.bytes().all(|b| b.is_ascii_graphic()) => {
                errors.push(FieldError::new("token", "must be printable ASCII without spaces"));
                None
            }
            Some(t) if platform == Some(Platform::Apns) && !t.bytes().all(|b| b.is_ascii_hexdigit()) => {
                errors.push(FieldError::new("token", "an APNs device token is hexadecimal"));
                None
            }
            Some(t) => Some(t.to_owned()),
        };
        match (platform, token) {
            (Some(platform), Some(token)) if errors.is_empty() => Ok(Self { platform, token }),
            _ => Err(Invalid(errors)),
        }
    }

    fn device_id(&self, user_id: &str) -> String {
        let digest = Sha256::digest(format!("{user_id}\n{:?}\n{}", self.platform, self.token));
        uuid::Builder::from_custom_bytes(digest[..16].try_into().expect("16 bytes")).into_uuid().to_string()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Device {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    pub device_id: String,
    pub platform: Platform,
    pub endpoint_arn: String,
    pub created_at: String,
}

impl Device {
    /// The user's devices.
    pub async fn list(table: &Table, user_id: &str) -> Result<Vec<Device>, StoreError> {
        let out = table
            .client()
            .query()
            .table_name(table.name())
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", av::s(keys::user(user_id)))
            .expression_attribute_values(":prefix", av::s(DEVICE_PREFIX))
            .send()
            .await
            .map_err(dynamo_error)?;
        out.items
            .unwrap_or_default()
            .into_iter()
            .map(|i| serde_dynamo::from_item(i).map_err(StoreError::from))
            .collect()
    }

    /// `POST /notifications/devices`: an SNS platform endpoint for the token, recorded for
    /// the user. Registering the same token again returns the same device (and turns its
    /// endpoint back on if SNS had disabled it).
    pub async fn register(app: &dyn Channels, user_id: &str, token: &DeviceToken) -> Result<Device, DeviceError> {
        let Some(application) = token.platform.application_arn(app.services()) else {
            return Err(Invalid::field("platform", "push to this platform is not configured on this deployment").into());
        };
        let table = app.services().table();
        let device_id = token.device_id(user_id);
        let existing = Self::list(table, user_id).await?;
        if existing.len() >= MAX_DEVICES && !existing.iter().any(|d| d.device_id == device_id) {
            return Err(DeviceError::TooMany);
        }
        // SNS answers the existing endpoint for a token it knows (same attributes), so this is
        // safe to repeat.
        let sns = app.sns();
        let endpoint_arn = sns
            .create_platform_endpoint()
            .platform_application_arn(application)
            .token(&token.token)
            .send()
            .await
            .map_err(|e| NotifyError::Sns(DisplayErrorContext(&e).to_string()))?
            .endpoint_arn
            .ok_or_else(|| NotifyError::Sns("SNS returned no endpoint ARN".into()))?;
        sns.set_endpoint_attributes()
            .endpoint_arn(&endpoint_arn)
            .attributes("Enabled", "true")
            .attributes("CustomUserData", user_id)
            .send()
            .await
            .map_err(|e| NotifyError::Sns(DisplayErrorContext(&e).to_string()))?;
        let device = Device {
            pk: keys::user(user_id),
            sk: format!("{DEVICE_PREFIX}{device_id}"),
            device_id,
            platform: token.platform,
            endpoint_arn,
            created_at: time::rfc3339(time::now()),
        };
        if let Some(known) = existing.into_iter().find(|d| d.device_id == device.device_id) {
            return Ok(known);
        }
        table.put_item(&device).await?;
        tracing::info!(device_id = %device.device_id, platform = ?device.platform, "push device registered");
        Ok(device)
    }

    /// `DELETE /notifications/devices/{device_id}`: the endpoint and the record; 404 for a
    /// device the user does not have.
    pub async fn remove(app: &dyn Channels, user_id: &str, device_id: &str) -> Result<(), DeviceError> {
        let table = app.services().table();
        let pk = keys::user(user_id);
        let sk = format!("{DEVICE_PREFIX}{device_id}");
        let Some(device) = table.get::<Device>(&pk, &sk).await? else {
            return Err(DeviceError::NotFound);
        };
        Ok(device.forget(app).await?)
    }

    /// Deletes the endpoint (idempotent at SNS), then the record: a failure in between
    /// leaves a record whose next push finds the endpoint gone and removes it.
    pub(crate) async fn forget(&self, app: &dyn Channels) -> Result<(), NotifyError> {
        app.sns()
            .delete_endpoint()
            .endpoint_arn(&self.endpoint_arn)
            .send()
            .await
            .map_err(|e| NotifyError::Sns(DisplayErrorContext(&e).to_string()))?;
        app.services()
            .table()
            .transact(vec![app.services().table().delete(Change::new(&self.pk, &self.sk)).map_err(store)?])
            .await
            .map_err(store)?;
        Ok(())
    }
}

fn store(error: StoreError) -> NotifyError {
    NotifyError::Sns(format!("device record: {error}"))
}

/// What [`send_to_user`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PushOutcome {
    /// SNS message ids, one per device reached.
    pub sent: Vec<String>,
    /// Devices whose endpoint SNS reports disabled or gone; removed.
    pub removed: usize,
}

/// One notification to every device of `user_id`. Endpoints SNS has disabled (the app was
/// uninstalled, the token expired) or no longer knows are removed; any other failure is an
/// error, so the outbox item is retried.
pub async fn send_to_user(
    app: &dyn Channels,
    user_id: &str,
    title: &str,
    body: &str,
    data: &serde_json::Value,
) -> Result<PushOutcome, NotifyError> {
    let devices = Device::list(app.services().table(), user_id).await.map_err(store)?;
    let payload = payload(title, body, data);
    let mut outcome = PushOutcome::default();
    for device in devices {
        let sent = app
            .sns()
            .publish()
            .target_arn(&device.endpoint_arn)
            .message_structure("json")
            .message(&payload)
            .send()
            .await;
        match sent {
            Ok(out) => outcome.sent.push(out.message_id.unwrap_or_default()),
            Err(e) if matches!(e.code(), Some("EndpointDisabled" | "NotFound")) => {
                tracing::info!(device_id = %device.device_id, "push endpoint disabled or gone; device removed");
                device.forget(app).await?;
                outcome.removed += 1;
            }
            Err(e) => return Err(NotifyError::Sns(DisplayErrorContext(&e).to_string())),
        }
    }
    Ok(outcome)
}

/// SNS's per-platform message: FCM's `notification` and APNs's `aps.alert`, with `data`.
fn payload(title: &str, body: &str, data: &serde_json::Value) -> String {
    let fcm = serde_json::json!({ "notification": { "title": title, "body": body }, "data": data });
    let apns = serde_json::json!({ "aps": { "alert": { "title": title, "body": body } }, "data": data });
    serde_json::json!({
        "default": body,
        "GCM": fcm.to_string(),
        "APNS": apns.to_string(),
        "APNS_SANDBOX": apns.to_string(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_per_platform() {
        assert!(DeviceToken::parse(Some("fcm"), Some("abc:DEF-123_x")).is_ok());
        assert!(DeviceToken::parse(Some("apns"), Some(&"ab".repeat(32))).is_ok());
        for (platform, token, field) in [
            (Some("sms"), Some("t"), "platform"),
            (None, Some("t"), "platform"),
            (Some("fcm"), None, "token"),
            (Some("fcm"), Some(""), "token"),
            (Some("fcm"), Some("has space"), "token"),
            (Some("apns"), Some("not-hex"), "token"),
        ] {
            match DeviceToken::parse(platform, token) {
                Err(Invalid(errors)) => assert_eq!(errors[0].field, field, "{platform:?} {token:?}"),
                other => panic!("{platform:?} {token:?}: {other:?}"),
            }
        }
        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert!(matches!(DeviceToken::parse(Some("fcm"), Some(&long)), Err(Invalid(_))));
    }

    #[test]
    fn the_same_device_gets_the_same_id_and_others_do_not() {
        let t = DeviceToken::parse(Some("fcm"), Some("tok")).unwrap();
        assert_eq!(t.device_id("u1"), t.device_id("u1"));
        assert_ne!(t.device_id("u1"), t.device_id("u2"));
        let apns = DeviceToken::parse(Some("apns"), Some("abcd")).unwrap();
        assert_ne!(apns.device_id("u1"), DeviceToken::parse(Some("fcm"), Some("abcd")).unwrap().device_id("u1"));
    }

    #[test]
    fn the_payload_speaks_each_platform() {
        let p: serde_json::Value =
            serde_json::from_str(&payload("Paid", "€10.00 is on its way", &serde_json::json!({"payment_id": "p1"})))
                .unwrap();
        let fcm: serde_json::Value = serde_json::from_str(p["GCM"].as_str().unwrap()).unwrap();
        assert_eq!(fcm["notification"]["title"], "Paid");
        assert_eq!(fcm["data"]["payment_id"], "p1");
        let apns: serde_json::Value = serde_json::from_str(p["APNS"].as_str().unwrap()).unwrap();
        assert_eq!(apns["aps"]["alert"]["body"], "€10.00 is on its way");
    }
}
