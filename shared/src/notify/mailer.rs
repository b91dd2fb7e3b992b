//! Sends email through SES v2 with both a text and an HTML part.

use aws_sdk_sesv2::{
    Client,
    error::DisplayErrorContext,
    types::{Body, Content, Destination, EmailContent, Message},
};

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("email could not be built: {0}")]
    Build(String),
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
}

#[derive(Clone, Debug)]
pub struct Mailer {
    client: Client,
    from: String,
}

fn utf8(data: &str) -> Result<Content, NotifyError> {
    Content::builder().data(data).charset("UTF-8").build().map_err(|e| NotifyError::Build(e.to_string()))
}

impl Mailer {
    pub fn new(client: Client, from: impl Into<String>) -> Self {
        Self { client, from: from.into() }
    }

    /// Returns SES's message id.
    #[tracing::instrument(skip_all)]
    pub async fn send(&self, email: &Email) -> Result<String, NotifyError> {
        let message = Message::builder()
            .subject(utf8(&email.subject)?)
            .body(Body::builder().text(utf8(&email.text)?).html(utf8(&email.html)?).build())
            .build();
        let out = self
            .client
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(&email.to).build())
            .content(EmailContent::builder().simple(message).build())
            .send()
            .await
            .map_err(|e| NotifyError::Ses(DisplayErrorContext(&e).to_string()))?;
        let id = out.message_id().unwrap_or_default().to_owned();
        tracing::info!(message_id = %id, "email sent");
        Ok(id)
    }
}
