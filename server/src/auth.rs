//! Who a connection is and what it may do: the [`Authorizer`] a server is
//! configured with turns a bearer token into an [`Identity`], checked on
//! connect, on every subscribe and on every publish.
//!
//! [`JwtAuthorizer`] is the built-in one: JSON Web Tokens signed with HS256
//! (a shared secret) or RS256/ES256 (a public key), whose claims list the
//! channels a token may use.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use resub::protocol::validate_channel;
use serde::Deserialize;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The request carried no token and the server needs one.
    #[error("a token is required")]
    Missing,
    /// The token is malformed, its signature does not verify, or a claim is
    /// invalid. The text says which, never the token itself.
    #[error("the token was refused: {0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    Expired,
    /// The authorizer could not decide (its own backend is down): the
    /// client is told to retry later (`503`), not that its token is bad.
    #[error("authorization is unavailable: {0}")]
    Unavailable(String),
    /// A key or secret could not be loaded.
    #[error("cannot load the verification key: {0}")]
    Key(String),
}

/// Which channels a rule set allows: exact names, prefixes (a pattern
/// ending in `*`, such as `orders.*`), or every channel (`*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelRules {
    any: bool,
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl ChannelRules {
    /// Every channel.
    pub fn any() -> Self {
        Self { any: true, ..Self::default() }
    }

    /// No channel.
    pub fn none() -> Self {
        Self::default()
    }

    /// Rules from patterns: a channel name, a prefix ending in `*`, or `*`
    /// alone. A pattern that is neither (a bad name, a `*` inside) is an
    /// error.
    pub fn from_patterns<I, S>(patterns: I) -> Result<Self, AuthError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut rules = Self::none();
        for pattern in patterns {
            let pattern = pattern.as_ref();
            if pattern == "*" {
                rules.any = true;
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                // A prefix is the start of a valid name: the same alphabet.
                if !prefix.is_empty() && validate_channel(prefix).is_err() {
                    return Err(AuthError::Invalid(format!("invalid channel pattern {pattern:?}")));
                }
                rules.prefixes.push(prefix.to_owned());
            } else {
                validate_channel(pattern)
                    .map_err(|_| AuthError::Invalid(format!("invalid channel pattern {pattern:?}")))?;
                rules.exact.push(pattern.to_owned());
            }
        }
        Ok(rules)
    }

    /// Whether `channel` is allowed.
    pub fn allows(&self, channel: &str) -> bool {
        self.any || self.exact.iter().any(|c| c == channel) || self.prefixes.iter().any(|p| channel.starts_with(p))
    }
}

/// Who a connection or request is, and which channels it may subscribe to,
/// publish to and appear in presence on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The subject (a JWT's `sub`). When set, a connection that takes part in
    /// presence must give it as its `client_id` (or give none).
    pub subject: Option<String>,
    /// Channels it may subscribe to (and read the presence of).
    pub subscribe: ChannelRules,
    /// Channels it may publish to.
    pub publish: ChannelRules,
    /// Channels it may appear in the presence of.
    pub presence: ChannelRules,
}

impl Identity {
    /// Anyone, allowed everything: what a server without an authorizer
    /// gives every connection.
    pub fn anonymous() -> Self {
        Self {
            subject: None,
            subscribe: ChannelRules::any(),
            publish: ChannelRules::any(),
            presence: ChannelRules::any(),
        }
    }

    /// An identity with these rights.
    pub fn new(
        subject: Option<String>,
        subscribe: ChannelRules,
        publish: ChannelRules,
        presence: ChannelRules,
    ) -> Self {
        Self { subject, subscribe, publish, presence }
    }
}

/// Turns a request's bearer token (`Authorization: Bearer T`, or the
/// `access_token` query parameter a browser has to use) into an
/// [`Identity`], or refuses it.
///
/// Called once per WebSocket connection, SSE stream, poll and HTTP publish;
/// the identity then holds for the connection's life.
pub trait Authorizer: Send + Sync + 'static {
    /// Decides a token (`None`: the request carried none).
    fn authorize<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Identity, AuthError>>;
}

impl<F> Authorizer for F
where
    F: Fn(Option<&str>) -> Result<Identity, AuthError> + Send + Sync + 'static,
{
    fn authorize<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let result = self(token);
        Box::pin(std::future::ready(result))
    }
}

/// Verifies JSON Web Tokens.
///
/// A token must be signed with the configured algorithm and carry `exp` (a
/// few seconds of clock skew are allowed). Its claims grant rights:
///
/// | claim | meaning |
/// |---|---|
/// | `sub` | the subject; also the presence `client_id` it must use |
/// | `subscribe` | channels it may subscribe to: names, prefixes ending in `*`, or `*` |
/// | `publish` | channels it may publish to, the same way |
/// | `presence` | channels it may appear in presence on; absent: as `subscribe` |
///
/// An absent `subscribe` or `publish` claim grants nothing.
///
/// ```
/// let auth = resub_server::JwtAuthorizer::hs256(b"a secret of at least 32 bytes....");
/// # let _ = auth;
/// ```
#[derive(Clone)]
pub struct JwtAuthorizer {
    key: Arc<DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for JwtAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtAuthorizer").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

/// Allowed clock skew on `exp` and `nbf`, in seconds.
const LEEWAY_SECS: u64 = 5;

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    presence: Option<Vec<String>>,
}

impl JwtAuthorizer {
    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self { key: Arc::new(key), validation }
    }

    /// HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::with(DecodingKey::from_secret(secret), Algorithm::HS256)
    }

    /// HS256 with the secret in a file (its content, without a trailing
    /// newline). An empty secret is refused.
    pub fn hs256_file(path: &Path) -> Result<Self, AuthError> {
        let secret = std::fs::read(path).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        let secret = secret.trim_ascii_end();
        if secret.is_empty() {
            return Err(AuthError::Key(format!("{}: the secret is empty", path.display())));
        }
        Ok(Self::hs256(secret))
    }

    /// RS256 (an RSA public key) or ES256 (a P-256 public key), from a PEM
    /// public key.
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, AuthError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::with(key, Algorithm::RS256));
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Self::with(key, Algorithm::ES256))
            .map_err(|e| AuthError::Key(format!("not an RSA or EC public key in PEM: {e}")))
    }

    /// [`JwtAuthorizer::public_key_pem`] from a file.
    pub fn public_key_file(path: &Path) -> Result<Self, AuthError> {
        let pem = std::fs::read(path).map_err(|e| AuthError::Key(format!("{}: {e}", path.display())))?;
        Self::public_key_pem(&pem)
    }

    /// Also requires `aud` to be one of `audience`.
    pub fn with_audience(mut self, audience: &[&str]) -> Self {
        self.validation.set_audience(audience);
        self
    }

    /// Also requires `iss` to be one of `issuers`.
    pub fn with_issuer(mut self, issuers: &[&str]) -> Self {
        self.validation.set_issuer(issuers);
        self
    }

    /// Verifies a token and reads its rights.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::Expired,
            // The error's text describes the failure, not the token.
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        let subscribe = ChannelRules::from_patterns(&claims.subscribe)?;
        let publish = ChannelRules::from_patterns(&claims.publish)?;
        let presence = match &claims.presence {
            Some(patterns) => ChannelRules::from_patterns(patterns)?,
            None => subscribe.clone(),
        };
        if let Some(sub) = &claims.sub {
            validate_channel(sub).map_err(|_| {
                AuthError::Invalid("sub must be 1-128 characters from A-Z a-z 0-9 _ . : - (it is the client id)".into())
            })?;
        }
        Ok(Identity { subject: claims.sub, subscribe, publish, presence })
    }
}

impl Authorizer for JwtAuthorizer {
    fn authorize<'a>(&'a self, token: Option<&'a str>) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let result = match token {
            Some(token) => self.verify(token),
            None => Err(AuthError::Missing),
        };
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        crate::state::unix_ms() / 1000
    }

    fn sign(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn patterns_allow_names_prefixes_and_everything() {
        let rules = ChannelRules::from_patterns(["news", "orders.*"]).unwrap();
        assert!(rules.allows("news"));
        assert!(rules.allows("orders.eu"));
        assert!(!rules.allows("newsroom"));
        assert!(!rules.allows("orders"));
        assert!(ChannelRules::from_patterns(["*"]).unwrap().allows("anything"));
        assert!(!ChannelRules::none().allows("news"));
        assert!(ChannelRules::from_patterns(["a*b"]).is_err());
        assert!(ChannelRules::from_patterns(["has space"]).is_err());
    }

    #[test]
    fn a_valid_token_grants_its_claims() {
        let auth = JwtAuthorizer::hs256(SECRET);
        let token =
            sign(json!({ "sub": "alice", "exp": now() + 60, "subscribe": ["news", "orders.*"], "publish": ["chat"] }));
        let id = auth.verify(&token).unwrap();
        assert_eq!(id.subject.as_deref(), Some("alice"));
        assert!(id.subscribe.allows("orders.1"));
        assert!(!id.subscribe.allows("chat"));
        assert!(id.publish.allows("chat"));
        assert!(!id.publish.allows("news"));
        // Presence follows `subscribe` when not given.
        assert!(id.presence.allows("news"));
    }

    #[test]
    fn expired_forged_and_exp_less_tokens_are_refused() {
        let auth = JwtAuthorizer::hs256(SECRET);
        let expired = sign(json!({ "exp": now() - 3600, "subscribe": ["*"] }));
        assert_eq!(auth.verify(&expired), Err(AuthError::Expired));
        let no_exp = sign(json!({ "subscribe": ["*"] }));
        assert!(matches!(auth.verify(&no_exp), Err(AuthError::Invalid(_))));
        let other = JwtAuthorizer::hs256(b"another secret, also 32 bytes...");
        let token = sign(json!({ "exp": now() + 60 }));
        assert!(matches!(other.verify(&token), Err(AuthError::Invalid(_))));
        assert!(matches!(auth.verify("not a token"), Err(AuthError::Invalid(_))));
        let bad_pattern = sign(json!({ "exp": now() + 60, "subscribe": ["a b"] }));
        assert!(matches!(auth.verify(&bad_pattern), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn an_error_never_contains_the_token() {
        let auth = JwtAuthorizer::hs256(SECRET);
        let token = sign(json!({ "exp": now() + 60 })) + "x";
        let err = auth.verify(&token).unwrap_err().to_string();
        assert!(!err.contains(&token[..20]), "{err}");
    }
}
