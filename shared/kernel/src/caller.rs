//! Who asked: the ids a request is traced and audited by, the caller's address and user
//! agent, and the invocation's deadline. The edge reads them off the Lambda event; domain
//! code records them and keys per-address limits by them, without knowing HTTP.

#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    /// Our id for the request (API Gateway's, else the invocation's): what logs and audit
    /// entries carry. A caller can't choose it.
    pub request_id: String,
    /// The caller's own `X-Request-Id`, when sane: echoed back, and kept beside ours in
    /// audit entries.
    pub client_request_id: Option<String>,
    /// API Gateway's own id for the request, when there was one.
    pub apigw_request_id: Option<String>,
    /// The Lambda invocation id.
    pub lambda_request_id: Option<String>,
    pub source_ip: Option<String>,
    pub user_agent: Option<String>,
    /// When this invocation must have answered (Lambda's deadline).
    pub deadline: crate::deadline::Deadline,
}

/// Who asked, for work a request hands to the notifier (which audits it later): the
/// request's id, address and user agent, without the invocation's own details.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    pub request_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl Origin {
    /// The request as audit entries see it.
    pub fn meta(&self) -> RequestMeta {
        RequestMeta {
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
            ..RequestMeta::default()
        }
    }
}

impl RequestMeta {
    /// The id the answer carries (`X-Request-Id`, problem documents): the caller's if it sent
    /// a sane one, ours otherwise.
    pub fn answer_id(&self) -> &str {
        self.client_request_id.as_deref().unwrap_or(&self.request_id)
    }

    pub fn origin(&self) -> Origin {
        Origin {
            request_id: self.request_id.clone(),
            client_request_id: self.client_request_id.clone(),
            source_ip: self.source_ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }

    /// The client address for per-address limits and lockouts. An IPv6 client is its /64:
    /// one subscriber gets a whole /64 and could otherwise step through it for fresh counts.
    pub fn client_key(&self) -> std::borrow::Cow<'_, str> {
        let Some(ip) = self.source_ip.as_deref() else {
            return "unknown".into();
        };
        match ip.parse::<std::net::Ipv6Addr>() {
            Ok(v6) if v6.to_ipv4_mapped().is_none() => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3]).into()
            }
            _ => ip.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RequestMeta;

    fn key(ip: &str) -> String {
        RequestMeta { source_ip: Some(ip.into()), ..RequestMeta::default() }.client_key().into_owned()
    }

    #[test]
    fn ipv6_clients_are_their_64_and_ipv4_clients_their_address() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(RequestMeta::default().client_key(), "unknown");
    }
}
