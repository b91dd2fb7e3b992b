//! Sends email through SES v2 with both a text and an HTML part.

#[cfg(feature = "mail")]
use aws_sdk_sesv2::{
    Client,
    error::DisplayErrorContext,
    types::{Body, Content, Destination, EmailContent, Message, MessageHeader},
};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("email could not be built: {0}")]
    Build(String),
    #[cfg(feature = "mail")]
    #[error("email could not be rendered: {0}")]
    Render(#[from] minijinja::Error),
    #[error("SES refused or failed: {0}")]
    Ses(String),
    #[error("SNS refused or failed: {0}")]
    Sns(String),
    #[error("task failed: {0}")]
    Task(String),
}

#[derive(Debug, Clone)]
pub struct Email {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// For non-essential mail: the link that turns this kind of mail off, sent as
    /// `List-Unsubscribe` so mail clients offer it too.
    pub unsubscribe_link: Option<String>,
}

#[cfg(feature = "mail")]
#[derive(Clone, Debug)]
pub struct Mailer {
    client: Client,
    from: String,
    /// Its bounce and complaint events come back to the notifier (suppression).
    configuration_set: Option<String>,
}

#[cfg(feature = "mail")]
fn utf8(data: &str) -> Result<Content, NotifyError> {
    Content::builder().data(data).charset("UTF-8").build().map_err(|e| NotifyError::Build(e.to_string()))
}

#[cfg(feature = "mail")]
/// The SES message: subject, both parts, and `List-Unsubscribe` where the mail has a link.
fn message(email: &Email) -> Result<Message, NotifyError> {
    let mut message = Message::builder()
        .subject(utf8(&email.subject)?)
        .body(Body::builder().text(utf8(&email.text)?).html(utf8(&email.html)?).build());
    if let Some(link) = &email.unsubscribe_link {
        let header = MessageHeader::builder()
            .name("List-Unsubscribe")
            .value(format!("<{link}>"))
            .build()
            .map_err(|e| NotifyError::Build(e.to_string()))?;
        message = message.headers(header);
    }
    Ok(message.build())
}

#[cfg(feature = "mail")]
impl Mailer {
    pub fn new(client: Client, from: impl Into<String>, configuration_set: Option<String>) -> Self {
        Self { client, from: from.into(), configuration_set }
    }

    /// Returns SES's message id.
    #[tracing::instrument(skip_all)]
    pub async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        let out = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .content(EmailContent::builder().simple(message(email)?).build())
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map_err(|e| NotifyError::Ses(DisplayErrorContext(&e).to_string()))?;
        let id = out.message_id().unwrap_or_default().to_owned();
        tracing::info!(message_id = %id, "email sent");
        Ok(id)
    }
}

#[cfg(all(test, feature = "mail"))]
mod tests {
    use super::*;

    fn email(unsubscribe_link: Option<&str>) -> Email {
        Email {
            to: "a@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            unsubscribe_link: unsubscribe_link.map(str::to_owned),
        }
    }

    #[test]
    fn only_mail_with_an_unsubscribe_link_carries_list_unsubscribe() {
        let link = "https://app.example.com/unsubscribe?token=abc";
        let with = message(&email(Some(link))).unwrap();
        let headers: Vec<_> = with.headers().iter().map(|h| (h.name(), h.value())).collect();
        assert_eq!(headers, [("List-Unsubscribe", format!("<{link}>").as_str())]);
        assert!(message(&email(None)).unwrap().headers().is_empty());
    }
}
