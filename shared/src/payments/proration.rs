//! A plan change's billing, as Stripe names it: its own module, so that the Stripe port
//! (`gateway`) and the subscription rules both name it without naming each other.

/// How Stripe bills a plan change made mid-period (its `proration_behavior`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Proration {
    /// Credit the unused time, charge the new price's, on the next invoice (Stripe's default).
    #[default]
    CreateProrations,
    /// No adjustment: the new price applies from the next period's invoice.
    None,
    /// Prorate and invoice the difference now.
    AlwaysInvoice,
}

impl Proration {
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "create_prorations" => Some(Self::CreateProrations),
            "none" => Some(Self::None),
            "always_invoice" => Some(Self::AlwaysInvoice),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateProrations => "create_prorations",
            Self::None => "none",
            Self::AlwaysInvoice => "always_invoice",
        }
    }
}
