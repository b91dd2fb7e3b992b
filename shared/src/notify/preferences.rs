//! Per-user notification preferences: which channels may carry which kind of message.
//! Security messages (verification, reset, password changed, deletion, MFA) ignore them.
//!
//! Item: `PK = USER#{id}`, `SK = PREFERENCES`; absent means every switch is on.

use serde::{Deserialize, Serialize};

use crate::{
    invalid::{FieldError, Invalid},
    store::{StoreError, Table, av, keys},
};

const SK: &str = "PREFERENCES";

/// What a message is about, which decides whether preferences apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Always sent.
    #[default]
    Security,
    Payments,
    Product,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Email,
    Sms,
    Push,
}

const fn on() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmailSwitches {
    #[serde(default = "on")]
    pub payments: bool,
    #[serde(default = "on")]
    pub product: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmsSwitches {
    #[serde(default = "on")]
    pub payments: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSwitches {
    #[serde(default = "on")]
    pub payments: bool,
    #[serde(default = "on")]
    pub product: bool,
}

/// The switches, as `GET /notifications/preferences` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    pub email: EmailSwitches,
    pub sms: SmsSwitches,
    pub push: PushSwitches,
}

impl Default for Preferences {
    fn default() -> Self {
        Self {
            email: EmailSwitches { payments: true, product: true },
            sms: SmsSwitches { payments: true },
            push: PushSwitches { payments: true, product: true },
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Stored {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    preferences: Preferences,
    /// Bumped by every write; the condition of the next.
    #[serde(default)]
    version: u64,
    updated_at: String,
}

impl Preferences {
    /// Whether a `category` message may go to the user through `channel`.
    pub fn allows(&self, channel: Channel, category: Category) -> bool {
        match (channel, category) {
            (_, Category::Security) => true,
            (Channel::Email, Category::Payments) => self.email.payments,
            (Channel::Email, Category::Product) => self.email.product,
            (Channel::Sms, Category::Payments) => self.sms.payments,
            // No product SMS exists: texting marketing is opt-in territory we don't enter.
            (Channel::Sms, Category::Product) => false,
            (Channel::Push, Category::Payments) => self.push.payments,
            (Channel::Push, Category::Product) => self.push.product,
        }
    }

    /// Turns one switch off (an unsubscribe link). `false` if there is no such switch.
    pub fn switch_off(&mut self, channel: Channel, category: Category) -> bool {
        let switch = match (channel, category) {
            (Channel::Email, Category::Payments) => &mut self.email.payments,
            (Channel::Email, Category::Product) => &mut self.email.product,
            (Channel::Sms, Category::Payments) => &mut self.sms.payments,
            (Channel::Push, Category::Payments) => &mut self.push.payments,
            (Channel::Push, Category::Product) => &mut self.push.product,
            _ => return false,
        };
        *switch = false;
        true
    }

    /// Applies a `PUT` body: any subset of the switches, each a boolean; anything else in it
    /// is a 400 naming the field, and nothing changes.
    pub fn apply(&mut self, body: &serde_json::Value) -> Result<(), Invalid> {
        let Some(channels) = body.as_object() else {
            return Err(Invalid::field("body", "must be an object of channels"));
        };
        let mut next = *self;
        let mut errors = Vec::new();
        for (channel, switches) in channels {
            let Some(switches) = switches.as_object() else {
                errors.push(FieldError::new(channel.as_str(), "must be an object of booleans"));
                continue;
            };
            for (category, value) in switches {
                let field = format!("{channel}.{category}");
                let slot = match (channel.as_str(), category.as_str()) {
                    ("email", "payments") => &mut next.email.payments,
                    ("email", "product") => &mut next.email.product,
                    ("sms", "payments") => &mut next.sms.payments,
                    ("push", "payments") => &mut next.push.payments,
                    ("push", "product") => &mut next.push.product,
                    _ => {
                        errors.push(FieldError::new(field, "is not a preference"));
                        continue;
                    }
                };
                match value.as_bool() {
                    Some(on) => *slot = on,
                    None => errors.push(FieldError::new(field, "must be true or false")),
                }
            }
        }
        Invalid::check(errors)?;
        *self = next;
        Ok(())
    }

    pub async fn load(table: &Table, user_id: &str) -> Result<Self, StoreError> {
        Ok(Self::load_versioned(table, user_id).await?.0)
    }

    async fn load_versioned(table: &Table, user_id: &str) -> Result<(Self, u64), StoreError> {
        Ok(table.get::<Stored>(&keys::user(user_id), SK).await?.map(|s| (s.preferences, s.version)).unwrap_or_default())
    }

    /// Reads, changes with `edit` and writes back, on a version check so that two edits at
    /// once (a `PUT` and an unsubscribe link) both land; the result. An edit's refusal is
    /// the update's, and nothing is written.
    pub async fn update<E: From<StoreError>>(
        table: &Table,
        user_id: &str,
        edit: impl Fn(&mut Preferences) -> Result<(), E>,
    ) -> Result<Self, E> {
        for _ in 0..5 {
            let (mut preferences, version) = Self::load_versioned(table, user_id).await?;
            edit(&mut preferences)?;
            let stored = Stored {
                pk: keys::user(user_id),
                sk: SK.to_owned(),
                preferences,
                version: version + 1,
                updated_at: crate::time::rfc3339(crate::time::now()),
            };
            let put = if version == 0 {
                table.put_new(&stored)?
            } else {
                table.put_if(&stored, "version = :version", &[(":version", av::n(version))])?
            };
            match table.transact(vec![put]).await {
                Ok(()) => return Ok(preferences),
                Err(StoreError::TransactionConditionsFailed(_)) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        tracing::error!(user_id, "preferences kept changing under the update");
        Err(StoreError::TransactionConditionsFailed(vec![0]).into())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn security_always_goes_and_switches_decide_the_rest() {
        let mut p = Preferences::default();
        assert!(p.allows(Channel::Email, Category::Product));
        p.apply(&json!({"email": {"product": false}, "push": {"payments": false}})).unwrap();
        assert!(!p.allows(Channel::Email, Category::Product));
        assert!(p.allows(Channel::Email, Category::Payments));
        assert!(!p.allows(Channel::Push, Category::Payments));
        assert!(p.allows(Channel::Email, Category::Security));
        assert!(p.allows(Channel::Push, Category::Security));
        assert!(!p.allows(Channel::Sms, Category::Product));
    }

    #[test]
    fn a_bad_shape_changes_nothing_and_names_the_field() {
        let mut p = Preferences::default();
        for (body, field) in [
            (json!({"email": {"product": "no"}, "sms": {"payments": false}}), "email.product"),
            (json!({"sms": {"product": false}}), "sms.product"),
            (json!({"fax": {"payments": false}}), "fax.payments"),
            (json!({"email": true}), "email"),
            (json!([1]), "body"),
        ] {
            match p.apply(&body) {
                Err(Invalid(errors)) => assert_eq!(errors[0].field, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
            assert_eq!(p, Preferences::default(), "{body}");
        }
    }

    #[test]
    fn a_stored_item_missing_switches_reads_them_as_on() {
        let stored: Stored = serde_json::from_value(json!({
            "PK": "USER#u", "SK": "PREFERENCES", "updated_at": "x",
            "preferences": {"email": {"product": false}, "sms": {}, "push": {"payments": false}}
        }))
        .unwrap();
        let p = stored.preferences;
        assert!(!p.email.product && p.email.payments && p.sms.payments && !p.push.payments && p.push.product);
    }
}
