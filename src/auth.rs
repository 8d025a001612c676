//! Credentials that change: a token provider the client asks on every
//! connect, and again after the server refuses a token.
//!
//! With a provider ([`ClientBuilder::token_provider`](crate::ClientBuilder::token_provider)),
//! every connection request (and every HTTP publish or presence request)
//! carries `Authorization: Bearer <token>` with the token the provider gives
//! at that moment. A `401` (or WebSocket close code `4401`, a token that
//! expired) is then not final: the client reconnects, asking the provider
//! again, with its cursors as they were. Three refusals in a row stop the
//! client with [`Error::Unauthorized`](crate::Error::Unauthorized); a
//! provider that fails counts as a refusal.
//!
//! Providers should cache: a long-polling client connects once per poll.

use std::future::Future;
use std::pin::Pin;

use crate::Error;

impl std::fmt::Debug for dyn TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenProvider")
    }
}

/// A boxed future of a token.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, Error>> + Send>>;

/// Gives the token for the next request.
pub trait TokenProvider: Send + Sync + 'static {
    /// The token to send now (without the `Bearer ` prefix).
    fn token(&self) -> TokenFuture;
}

impl<F, Fut> TokenProvider for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<String, Error>> + Send + 'static,
{
    fn token(&self) -> TokenFuture {
        Box::pin(self())
    }
}
