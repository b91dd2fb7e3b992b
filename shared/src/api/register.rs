//! `POST /auth/register`

use crate::http::routes::{Endpoint, endpoint};
use lambda_http::{Body, Request, Response, http::StatusCode};
use serde::Deserialize;
use serde_json::json;

use super::optional_text;
use crate::{
    App,
    http::{ApiError, ApiResponse, FieldError, parse_json, required_field, serve},
    identity::{Email, Password, Registration, register},
    rate_limit::Rule,
};

#[derive(Debug, Deserialize)]
struct RegisterBody {
    email: Option<String>,
    password: Option<String>,
    full_name: Option<String>,
    org_name: Option<String>,
    invitation_token: Option<String>,
    captcha_token: Option<String>,
}

impl RegisterBody {
    /// Checks every field and reports all problems at once.
    fn validate(self) -> Result<Registration, ApiError> {
        let mut errors = Vec::new();
        let email = required_field("email", self.email.as_deref().map(Email::parse), &mut errors);
        let full_name = optional_text("full_name", self.full_name, &mut errors);
        let org_name = optional_text("org_name", self.org_name, &mut errors);
        let invitation_token = self.invitation_token.filter(|t| !t.is_empty());
        if invitation_token.as_ref().is_some_and(|t| t.len() > 256) {
            errors.push(FieldError::new("invitation_token", "is too long"));
        }
        let mut context: Vec<&str> = Vec::new();
        if let Some(email) = &email {
            context.extend([email.as_str(), email.local_part()]);
        }
        if let Some(name) = &full_name {
            context.extend(name.split_whitespace());
        }
        let password =
            required_field("password", self.password.as_deref().map(|p| Password::parse(p, &context)), &mut errors);
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => {
                Ok(Registration { email, password, full_name, org_name, invitation_token })
            }
            _ => Err(ApiError::Validation(errors)),
        }
    }
}

pub async fn handle(app: &App, req: Request) -> Response<Body> {
    serve(req, app.browser(), |req, meta| async move {
        if endpoint(req.method().as_str(), req.uri().path())? != Endpoint::Register {
            return Err(ApiError::NotFound);
        }
        app.rate_limit(Rule::Register, &meta.client_key()).await?;
        let mut body = parse_json::<RegisterBody>(&req)?;
        let captcha_token = crate::captcha::token_field(body.captcha_token.take())?;
        let input = body.validate()?;
        // After validation: a token is single use, so a typo in the form must not spend it.
        app.require_captcha(captcha_token.as_deref(), &meta).await?;
        register(app, input, &meta).await?;
        Ok(ApiResponse::json(StatusCode::ACCEPTED, json!({ "status": "pending_verification" })))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_control_and_direction_characters() {
        for bad in ["Eve\u{202E}gnp.exe", "a\u{2066}b", "tab\there", "rlm\u{200F}"] {
            let mut errors = Vec::new();
            optional_text("full_name", Some(bad.to_owned()), &mut errors);
            assert_eq!(errors.len(), 1, "{bad:?}");
        }
        let mut errors = Vec::new();
        assert_eq!(
            optional_text("full_name", Some(" Zoë Ōsaka-نور ".to_owned()), &mut errors).as_deref(),
            Some("Zoë Ōsaka-نور")
        );
        assert!(errors.is_empty());
    }
}
