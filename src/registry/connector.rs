//! The egress gate at the connector: every socket the HTTP client opens is decided here, by
//! [`EgressPolicy::dial`] on the destination's scheme, host *and* port.
//!
//! Owns: hooking the decision into reqwest where connections are made. reqwest 0.13 offers
//! no single hook that both sees the destination and can refuse it: `connector_layer`
//! wraps connection establishment but hides the destination (an `Unnameable` request,
//! reqwest issue #2842), and its DNS resolver sees names only (no port, and never an IP
//! literal). So the gate is two supported hooks on the same connector call:
//! - a custom proxy matcher ([`reqwest::Proxy::custom`]): reqwest's connector consults it
//!   with the destination (`scheme://host:port`) of every new connection, before it dials.
//!   It asks the policy, records the verdict for this thread, and names the proxy to dial:
//!   the configured one, or none;
//! - a connector layer ([`GateLayer`]) around that connector: it clears the verdict, hands
//!   the destination on (the matcher runs inside that call, before any `await`), and
//!   returns the connect future only when the verdict allows it. Otherwise it drops the
//!   future unpolled — no DNS lookup, no socket — and fails with [`DialRefused`]. No verdict
//!   at all (a reqwest that stopped consulting the matcher) is a refusal too: the gate fails
//!   closed, and the connector tests notice.
//!
//! Through a proxy the layer sees the target: the `CONNECT` target is the host:port the
//! policy checked, and the proxy dialled is the configured proxy (the matcher names no
//! other). [`refusal`] finds a [`DialRefused`] in reqwest's error chain by type.
//!
//! Must never: let a connection start without a verdict for it, dial a proxy other than the
//! configured one, or let the verdict of one connection decide another.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use edgepull_core::egress::{Dial, EgressPolicy, PolicyError, redact_url};
use edgepull_core::hostport::HostPort;

/// reqwest's connector error type.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the gate refused a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DialRefused {
    /// The policy refused the destination.
    #[error(transparent)]
    Policy(PolicyError),
    /// The connector opened a connection without asking the policy first.
    #[error("the connection was not shown to the egress check; refused")]
    Unchecked,
}

thread_local! {
    /// The verdict on the connection being set up by the [`Gate`] call on this thread.
    static VERDICT: RefCell<Option<Result<(), PolicyError>>> = const { RefCell::new(None) };
}

/// The proxy matcher half of the gate, for `ClientBuilder::proxy` (it is also what makes
/// reqwest ignore `HTTPS_PROXY` & co). Pair it with [`GateLayer`].
pub(crate) fn matcher(policy: Arc<EgressPolicy>) -> reqwest::Proxy {
    reqwest::Proxy::custom(move |dst: &url::Url| -> Option<url::Url> {
        let verdict = match HostPort::from_url(dst) {
            Some(target) => policy.dial(dst.scheme(), &target),
            None => Err(PolicyError::NoHost { url: redact_url(dst) }),
        };
        let via = match &verdict {
            // `with_port`: the configured port even when it is the scheme's default.
            Ok(Dial::Tunnel(proxy)) => url::Url::parse(&format!("http://{}", proxy.with_port())).ok(),
            _ => None,
        };
        VERDICT.with(|v| *v.borrow_mut() = Some(verdict.map(|_| ())));
        via
    })
}

/// The layer half of the gate, for `ClientBuilder::connector_layer`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GateLayer;

impl<S> tower_layer::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner }
    }
}

/// reqwest's connector behind the gate.
#[derive(Debug, Clone)]
pub(crate) struct Gate<S> {
    inner: S,
}

impl<S, R> tower_service::Service<R> for Gate<S>
where
    S: tower_service::Service<R, Error = BoxError>,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, destination: R) -> Self::Future {
        VERDICT.with(|v| v.borrow_mut().take());
        // Builds the connect future without polling it; the matcher runs in here.
        let connecting = self.inner.call(destination);
        let verdict = VERDICT.with(|v| v.borrow_mut().take());
        let refused = match verdict {
            Some(Ok(())) => return Box::pin(connecting),
            Some(Err(e)) => DialRefused::Policy(e),
            None => DialRefused::Unchecked,
        };
        drop(connecting);
        Box::pin(std::future::ready(Err(Box::new(refused) as BoxError)))
    }
}

/// The gate's refusal inside a failed request's error chain, if that is why it failed.
pub(crate) fn refusal(e: &reqwest::Error) -> Option<&DialRefused> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<DialRefused>() {
            return Some(refused);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests;
