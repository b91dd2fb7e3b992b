//! What payment code takes: the services every function has (with the account code's), and
//! the Stripe client built from the secret. A payments function's `App` holds this in place of the bare services.

use std::{ops::Deref, sync::Arc};

use super::{Gateway, gateway::Stripe};
use crate::{
    config::Settings, deadline::Deadline, identity::IdentityServices, payments::PaymentError, secrets::Part,
    services::DerivedFromSecret,
};

pub struct PaymentServices {
    services: IdentityServices,
    /// `None` inside: the Stripe secret holds no key.
    gateway: DerivedFromSecret<Option<Arc<Gateway>>>,
}

impl Deref for PaymentServices {
    type Target = IdentityServices;

    fn deref(&self) -> &IdentityServices {
        &self.services
    }
}

impl PaymentServices {
    /// See [`crate::services::Services::new`]; Stripe is built on first use.
    pub fn new(settings: Settings, sdk: aws_config::SdkConfig) -> Self {
        Self { services: IdentityServices::new(settings, sdk), gateway: DerivedFromSecret::new() }
    }

    /// These services reading only `parts` of the secrets: what one function declares.
    pub fn reading(mut self, parts: &'static [Part]) -> Self {
        self.services = self.services.reading(parts);
        self
    }

    /// The Stripe client, for calls made within `deadline`. Without a Stripe key in its
    /// secret: 503 `payments_unavailable` (production functions that take payments refuse to
    /// start instead).
    pub async fn stripe(&self, deadline: Deadline) -> Result<Stripe, PaymentError> {
        let secrets = self.secrets().get().await.map_err(PaymentError::internal)?;
        let gateway = self
            .gateway
            .get(secrets, |s| {
                Gateway::from_config(self.settings(), s).map(|g| g.map(Arc::new)).map_err(PaymentError::internal)
            })
            .await?;
        gateway.map(|g| g.within(deadline)).ok_or(PaymentError::PaymentsUnavailable)
    }
}
