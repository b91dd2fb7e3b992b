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
    /// For non-essential mail: the page that turns this kind of mail off, in the body.
    pub unsubscribe_link: Option<String>,
    /// For non-essential mail: the API URL a mail client posts to (RFC 8058), sent as
    /// `List-Unsubscribe` with `List-Unsubscribe-Post`, which Gmail and Yahoo require of
    /// bulk senders.
    pub one_click_unsubscribe: Option<String>,
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
/// The SES message: subject, both parts, and the one-click unsubscribe headers where the
/// mail has them (RFC 8058: one HTTPS URI, and the form the client is to post).
fn message(email: &Email) -> Result<Message, NotifyError> {
    let mut message = Message::builder()
        .subject(utf8(&email.subject)?)
        .body(Body::builder().text(utf8(&email.text)?).html(utf8(&email.html)?).build());
    let header = |name: &str, value: String| {
        MessageHeader::builder().name(name).value(value).build().map_err(|e| NotifyError::Build(e.to_string()))
    };
    if let Some(url) = &email.one_click_unsubscribe {
        message = message
            .headers(header("List-Unsubscribe", format!("<{url}>"))?)
            .headers(header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click".to_owned())?);
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

    fn email(one_click: Option<&str>) -> Email {
        Email {
            to: "a@example.com".into(),
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            unsubscribe_link: one_click.map(|_| "https://app.example.com/unsubscribe?token=abc".to_owned()),
            one_click_unsubscribe: one_click.map(str::to_owned),
        }
    }

    #[test]
    fn only_mail_with_an_unsubscribe_link_carries_the_one_click_headers() {
        let url = "https://api.example.com/notifications/unsubscribe/one-click?token=abc";
        let with = message(&email(Some(url))).unwrap();
        let headers: Vec<_> = with.headers().iter().map(|h| (h.name(), h.value())).collect();
        assert_eq!(
            headers,
            [
                ("List-Unsubscribe", format!("<{url}>").as_str()),
                ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
            ]
        );
        assert!(message(&email(None)).unwrap().headers().is_empty());
    }
}
