//! Email templates: one subject, text and HTML template per kind, compiled into the binary
//! and rendered with minijinja (HTML auto-escaped).

#[cfg(feature = "mail")]
use std::sync::OnceLock;

#[cfg(feature = "mail")]
use minijinja::Environment;
#[cfg(feature = "mail")]
use serde::Serialize;

use super::Category;
#[cfg(feature = "mail")]
use super::Email;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailKind {
    VerifyEmail,
    AccountExists,
    ResetPassword,
    PasswordChanged,
    Invitation,
    DeletionScheduled,
    Welcome,
    DeletionCancelled,
    AccountErased,
    /// Two-step verification turned on / off (security mail).
    MfaEnabled,
    MfaDisabled,
    /// A recovery code was spent on a login (security mail).
    MfaRecoveryUsed,
}

impl EmailKind {
    /// What the email is about: security mail is always sent; the rest follows the
    /// recipient's preferences and carries an unsubscribe link.
    pub fn category(self) -> Category {
        match self {
            Self::Welcome => Category::Product,
            _ => Category::Security,
        }
    }

    #[cfg(feature = "mail")]
    fn name(self) -> &'static str {
        match self {
            Self::VerifyEmail => "verify_email",
            Self::AccountExists => "account_exists",
            Self::ResetPassword => "reset_password",
            Self::PasswordChanged => "password_changed",
            Self::Invitation => "invitation",
            Self::DeletionScheduled => "deletion_scheduled",
            Self::Welcome => "welcome",
            Self::DeletionCancelled => "deletion_cancelled",
            Self::AccountErased => "account_erased",
            Self::MfaEnabled => "mfa_enabled",
            Self::MfaDisabled => "mfa_disabled",
            Self::MfaRecoveryUsed => "mfa_recovery_used",
        }
    }
}

#[cfg(feature = "mail")]
macro_rules! templates {
    ($env:ident; $($name:literal),* $(,)?) => {
        $(
            $env.add_template(concat!($name, ".subject.txt"), include_str!(concat!("templates/", $name, ".subject.txt"))).expect("subject template compiles");
            $env.add_template(concat!($name, ".txt"), include_str!(concat!("templates/", $name, ".txt"))).expect("text template compiles");
            $env.add_template(concat!($name, ".html"), include_str!(concat!("templates/", $name, ".html"))).expect("html template compiles");
        )*
    };
}

#[cfg(feature = "mail")]
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.add_template("layout.html", include_str!("templates/layout.html")).expect("layout compiles");
        templates!(env; "verify_email", "account_exists", "reset_password", "password_changed", "invitation",
            "deletion_scheduled", "welcome", "deletion_cancelled", "account_erased", "mfa_enabled", "mfa_disabled",
            "mfa_recovery_used");
        env
    })
}

#[cfg(feature = "mail")]
/// Renders `kind` for `to` with `context` into a ready-to-send email.
pub fn render(kind: EmailKind, to: &str, context: impl Serialize) -> Result<Email, minijinja::Error> {
    let env = environment();
    let ctx = minijinja::Value::from_serialize(&context);
    let name = kind.name();
    let text_attr = |name: &str| ctx.get_attr(name).ok().and_then(|v| v.as_str().map(str::to_owned));
    let (unsubscribe_link, one_click_unsubscribe) = (text_attr("unsubscribe_link"), text_attr("one_click_unsubscribe"));
    let subject = env.get_template(&format!("{name}.subject.txt"))?.render(&ctx)?;
    Ok(Email {
        to: to.to_owned(),
        subject: subject.trim().to_owned(),
        text: env.get_template(&format!("{name}.txt"))?.render(&ctx)?,
        html: env.get_template(&format!("{name}.html"))?.render(&ctx)?,
        unsubscribe_link,
        one_click_unsubscribe,
    })
}

#[cfg(all(test, feature = "mail"))]
mod tests {
    use super::*;

    #[test]
    fn verification_email_has_the_link_in_both_parts_and_escapes_html() {
        let link = "https://app.example.com/verify-email?token=abc_DEF-123";
        let email = render(
            EmailKind::VerifyEmail,
            "a@example.com",
            serde_json::json!({"link": link, "name": "<script>x</script>"}),
        )
        .unwrap();
        assert!(email.text.contains(link));
        assert!(email.html.contains(link));
        assert!(!email.html.contains("<script>x"));
        assert!(!email.subject.is_empty());
    }

    #[test]
    fn every_kind_renders_both_parts() {
        let ctx = serde_json::json!({"link": "https://x/p?token=t", "org_name": "Acme & Co", "role": "member",
            "deletion_date": "2026-12-21", "restore_link": "https://x/restore", "login_link": "https://x/login",
            "reset_link": "https://x/forgot-password", "name": "Ada", "codes_left": 9,
            "revoke_link": "https://x/revoke-factor#token=r"});
        for kind in [
            EmailKind::VerifyEmail,
            EmailKind::AccountExists,
            EmailKind::ResetPassword,
            EmailKind::PasswordChanged,
            EmailKind::Invitation,
            EmailKind::DeletionScheduled,
            EmailKind::Welcome,
            EmailKind::DeletionCancelled,
            EmailKind::AccountErased,
            EmailKind::MfaEnabled,
            EmailKind::MfaDisabled,
            EmailKind::MfaRecoveryUsed,
        ] {
            let email = render(kind, "a@example.com", &ctx).unwrap();
            assert!(
                !email.subject.is_empty() && !email.text.trim().is_empty() && email.html.contains("</html>"),
                "{kind:?}"
            );
        }
        // Each MFA change tells the owner how to undo it if it was not them.
        for (kind, undo) in [
            (EmailKind::MfaEnabled, "https://x/revoke-factor#token=r"),
            (EmailKind::MfaDisabled, "https://x/forgot-password"),
        ] {
            let email = render(kind, "a@example.com", &ctx).unwrap();
            assert_eq!(kind.category(), Category::Security, "MFA changes are security mail");
            assert!(email.text.contains(undo) && email.html.contains(undo), "{kind:?}");
        }
        let invite = render(EmailKind::Invitation, "a@example.com", &ctx).unwrap();
        assert!(invite.html.contains("Acme &amp; Co") && invite.text.contains("https://x/p?token=t"));
    }

    #[test]
    fn non_essential_mail_shows_its_unsubscribe_link_and_security_mail_has_none() {
        let link = "https://app.example.com/unsubscribe?token=a.b.c";
        let welcome = render(
            EmailKind::Welcome,
            "a@example.com",
            serde_json::json!({"login_link": "https://x/login",
            "unsubscribe_link": link}),
        )
        .unwrap();
        assert_eq!(EmailKind::Welcome.category(), Category::Product);
        assert_eq!(welcome.unsubscribe_link.as_deref(), Some(link));
        assert!(welcome.text.contains(link) && welcome.html.contains(link));
        let reset =
            render(EmailKind::ResetPassword, "a@example.com", serde_json::json!({"link": "https://x/r"})).unwrap();
        assert_eq!(EmailKind::ResetPassword.category(), Category::Security);
        assert!(reset.unsubscribe_link.is_none() && !reset.html.contains("Unsubscribe"));
    }

    #[test]
    fn account_exists_email_renders() {
        let email = render(
            EmailKind::AccountExists,
            "a@example.com",
            serde_json::json!({"login_link": "https://x/login", "reset_link": "https://x/forgot-password"}),
        )
        .unwrap();
        assert!(email.text.contains("https://x/forgot-password"));
        assert!(email.html.contains("https://x/login"));
    }
}
