//! Addresses we no longer mail: SES reports a permanent bounce or a complaint (through the
//! configuration set's SNS topic, to the notifier), and the address is suppressed. Nothing
//! more goes to it, security mail included (mailing an address that bounces hurts the
//! sender's reputation for everyone); a user who changes address starts clean.
//!
//! Item: `PK = SUPPRESSED#{sha256(address)}`, `SK = SUPPRESSED`: the key holds no address.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    audit::{Audit, AuditEntry, AuditStatus},
    caller::RequestMeta,
    identity::{Email, User},
    services::Services,
    store::{StoreError, Table},
    time,
};

const SK: &str = "SUPPRESSED";

fn key(address: &str) -> String {
    format!("SUPPRESSED#{}", hex::encode(Sha256::digest(address.as_bytes())))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suppression {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    /// `bounce` or `complaint`.
    pub reason: String,
    /// SES's bounce subtype or complaint feedback type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub feedback_id: String,
    pub suppressed_at: String,
}

impl Suppression {
    /// Whether `address` (normalised) is suppressed.
    pub async fn find(table: &Table, address: &str) -> Result<Option<Self>, StoreError> {
        table.get(&key(address), SK).await
    }
}

/// One address SES told us about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub address: String,
    pub reason: &'static str,
    pub kind: Option<String>,
    pub feedback_id: String,
}

/// The addresses to suppress in one SES notification (event publishing's `eventType` or an
/// identity notification's `notificationType`). Transient bounces suppress nothing: SES
/// retries those itself.
pub fn parse_feedback(message: &str) -> Result<Vec<Feedback>, serde_json::Error> {
    let v: Value = serde_json::from_str(message)?;
    let kind = v["eventType"].as_str().or_else(|| v["notificationType"].as_str()).unwrap_or_default();
    let text = |x: &Value| x.as_str().map(str::to_owned);
    let (reason, detail, recipients, sub_kind) = match kind {
        "Bounce" if v["bounce"]["bounceType"] == "Permanent" => {
            ("bounce", &v["bounce"], &v["bounce"]["bouncedRecipients"], text(&v["bounce"]["bounceSubType"]))
        }
        "Complaint" => (
            "complaint",
            &v["complaint"],
            &v["complaint"]["complainedRecipients"],
            text(&v["complaint"]["complaintFeedbackType"]),
        ),
        _ => return Ok(Vec::new()),
    };
    let feedback_id = text(&detail["feedbackId"])
        .or_else(|| text(&v["mail"]["messageId"]))
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    Ok(recipients
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["emailAddress"].as_str())
        .filter_map(|a| Email::parse(strip_display_name(a)).ok())
        .map(|address| Feedback {
            address: address.as_str().to_owned(),
            reason,
            kind: sub_kind.clone(),
            feedback_id: feedback_id.clone(),
        })
        .collect())
}

/// `"Ada <ada@example.com>"` → `ada@example.com`.
fn strip_display_name(address: &str) -> &str {
    match (address.rfind('<'), address.rfind('>')) {
        (Some(start), Some(end)) if start < end => &address[start + 1..end],
        _ => address,
    }
}

/// Suppresses each address in an SES notification and audits it in its owner's
/// organisation. A redelivered notification (same feedback id) changes nothing.
pub async fn record_feedback(app: &Services, message: &str, notification_id: &str) -> Result<usize, StoreError> {
    let feedback = parse_feedback(message).map_err(|e| StoreError::Dynamo(format!("not an SES notification: {e}")))?;
    let table = app.table();
    let meta = RequestMeta { request_id: notification_id.to_owned(), ..RequestMeta::default() };
    let mut suppressed = 0;
    for f in feedback {
        let item = Suppression {
            pk: key(&f.address),
            sk: SK.to_owned(),
            reason: f.reason.to_owned(),
            kind: f.kind.clone(),
            feedback_id: f.feedback_id.clone(),
            suppressed_at: time::rfc3339(time::now()),
        };
        let mut items = vec![table.put_if(
            &item,
            "attribute_not_exists(PK) OR feedback_id <> :id",
            &[(":id", crate::store::av::s(&f.feedback_id))],
        )?];
        let owner = User::find_by_email(table, &f.address).await?;
        if let Some(owner) = &owner {
            let entry = AuditEntry::new("email.suppressed", AuditStatus::Success, &owner.org_id, &meta)
                .target(&owner.user_id)
                .details(json!({ "reason": f.reason, "kind": f.kind, "feedback_id": f.feedback_id }));
            items.push(app.audit().put(&entry)?);
        }
        match table.transact(items).await {
            Ok(()) => {
                suppressed += 1;
                tracing::warn!(reason = f.reason, owner = ?owner.map(|o| o.user_id), "address suppressed");
            }
            Err(StoreError::TransactionConditionsFailed(_)) => {
                tracing::info!(feedback_id = %f.feedback_id, "feedback seen before; nothing to do");
            }
            Err(other) => return Err(other),
        }
    }
    Ok(suppressed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_bounces_and_complaints_suppress_transient_bounces_do_not() {
        let bounce = json!({"eventType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
            "feedbackId": "f1", "bouncedRecipients": [{"emailAddress": "Ada <ADA@Example.com>"}]},
            "mail": {"messageId": "m1"}});
        assert_eq!(
            parse_feedback(&bounce.to_string()).unwrap(),
            [Feedback {
                address: "ada@example.com".into(),
                reason: "bounce",
                kind: Some("General".into()),
                feedback_id: "f1".into()
            }]
        );
        let complaint = json!({"notificationType": "Complaint", "complaint": {"feedbackId": "f2",
            "complaintFeedbackType": "abuse", "complainedRecipients": [{"emailAddress": "b@example.com"}]}});
        let parsed = parse_feedback(&complaint.to_string()).unwrap();
        assert_eq!((parsed[0].address.as_str(), parsed[0].reason), ("b@example.com", "complaint"));
        let transient = json!({"eventType": "Bounce", "bounce": {"bounceType": "Transient",
            "bouncedRecipients": [{"emailAddress": "c@example.com"}]}});
        assert!(parse_feedback(&transient.to_string()).unwrap().is_empty());
        assert!(parse_feedback(&json!({"eventType": "Delivery"}).to_string()).unwrap().is_empty());
        assert!(parse_feedback("not json").is_err());
    }

    #[test]
    fn the_key_holds_no_address() {
        assert!(!key("ada@example.com").contains("ada"));
        assert_eq!(key("ada@example.com"), key("ada@example.com"));
    }
}
