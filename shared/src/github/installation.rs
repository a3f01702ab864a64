//! A client acting as one installation on one repository: octocrab's, with writes paced per
//! installation and GitHub's secondary rate limits waited out even when GitHub sends no
//! header that says so (a bare 403, which octocrab cannot tell from a refusal).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use octocrab::{FromResponse, Octocrab};
use serde::Serialize;

use super::pace::WritePacer;

/// A raw response, for the few calls that read status or headers themselves.
pub type RawResponse = http::Response<BoxBody<Bytes, octocrab::Error>>;

/// How a secondary rate limit without headers is waited out: at least `min_wait` (GitHub
/// asks for a minute), doubling, `max_waits` times; then the error goes to the caller.
#[derive(Debug, Clone, Copy)]
pub struct SecondaryLimits {
    pub min_wait: Duration,
    pub max_waits: u32,
}

#[derive(Clone)]
pub struct Installation {
    crab: Arc<Octocrab>,
    id: i64,
    pacer: Arc<WritePacer>,
    limits: SecondaryLimits,
}

/// GitHub's words for a secondary rate limit (and, before 2021, "abuse detection"), in the
/// body of a 403 or 429. A 403 that says anything else is a refusal and stays one.
pub fn is_secondary_limit(e: &octocrab::Error) -> bool {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            says_rate_limit(source.status_code.as_u16(), &source.message)
        }
        _ => false,
    }
}

fn says_rate_limit(status: u16, message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    (status == 403 || status == 429)
        && (message.contains("secondary rate limit")
            || message.contains("abuse detection")
            || message.contains("rate limit exceeded"))
}

impl Installation {
    pub(super) fn new(
        crab: Arc<Octocrab>,
        id: i64,
        pacer: Arc<WritePacer>,
        limits: SecondaryLimits,
    ) -> Self {
        Installation {
            crab,
            id,
            pacer,
            limits,
        }
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// The installation's token (narrowed to the client's repository), for git over HTTP,
    /// valid for five more minutes at least: a fetch that starts with it does not outlive it.
    pub async fn git_token(&self) -> octocrab::Result<secrecy::SecretString> {
        self.crab
            .installation_token_with_buffer(chrono::Duration::minutes(5))
            .await
    }

    /// Runs one request, a write in its installation's turn; a secondary limit pauses the
    /// installation's writes everywhere and is waited out. GitHub refused the request, so
    /// repeating it cannot make a write happen twice.
    async fn send<T, F, Fut>(&self, write: bool, what: &str, request: F) -> octocrab::Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = octocrab::Result<T>>,
    {
        let mut wait = self.limits.min_wait;
        let mut waits = 0;
        loop {
            if write {
                self.pacer.wait_turn(self.id).await;
            }
            match request().await {
                Err(e) if waits < self.limits.max_waits && is_secondary_limit(&e) => {
                    waits += 1;
                    tracing::warn!(
                        error = %e,
                        request = what,
                        installation_id = self.id,
                        waiting_seconds = wait.as_secs(),
                        "GitHub secondary rate limit without a retry-after: waiting"
                    );
                    self.pacer.pause(self.id, wait).await;
                    tokio::time::sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                result => return result,
            }
        }
    }

    pub async fn get<R, P>(
        &self,
        route: impl AsRef<str>,
        parameters: Option<&P>,
    ) -> octocrab::Result<R>
    where
        R: FromResponse,
        P: Serialize + ?Sized,
    {
        let route = route.as_ref();
        self.send(false, route, || self.crab.get(route, parameters))
            .await
    }

    pub async fn post<P, R>(&self, route: impl AsRef<str>, body: Option<&P>) -> octocrab::Result<R>
    where
        R: FromResponse,
        P: Serialize + ?Sized,
    {
        let route = route.as_ref();
        self.send(true, route, || self.crab.post(route, body)).await
    }

    pub async fn put<R, B>(&self, route: impl AsRef<str>, body: Option<&B>) -> octocrab::Result<R>
    where
        R: FromResponse,
        B: Serialize + ?Sized,
    {
        let route = route.as_ref();
        self.send(true, route, || self.crab.put(route, body)).await
    }

    pub async fn patch<R, B>(&self, route: impl AsRef<str>, body: Option<&B>) -> octocrab::Result<R>
    where
        R: FromResponse,
        B: Serialize + ?Sized,
    {
        let route = route.as_ref();
        self.send(true, route, || self.crab.patch(route, body))
            .await
    }

    /// A raw GET: the caller reads its status (a download that may be gone).
    pub async fn _get(&self, uri: impl AsRef<str>) -> octocrab::Result<RawResponse> {
        let uri = uri.as_ref();
        self.send(false, uri, || self.crab._get(uri)).await
    }

    pub async fn _get_with_headers(
        &self,
        uri: impl AsRef<str>,
        headers: http::HeaderMap,
    ) -> octocrab::Result<RawResponse> {
        let uri = uri.as_ref();
        self.send(false, uri, || {
            self.crab._get_with_headers(uri, Some(headers.clone()))
        })
        .await
    }

    /// A raw DELETE, paced like every write: the caller reads its status (204, or 422 for a
    /// branch already gone). A rate limit comes back as a response too, not an error, so
    /// it is the caller's to see.
    pub async fn _delete(&self, uri: impl AsRef<str>) -> octocrab::Result<RawResponse> {
        let uri = uri.as_ref();
        self.send(true, uri, || self.crab._delete(uri, None::<&()>))
            .await
    }

    pub async fn body_to_string(&self, response: RawResponse) -> octocrab::Result<String> {
        self.crab.body_to_string(response).await
    }
}

#[cfg(test)]
mod tests {
    use super::says_rate_limit;

    #[test]
    fn only_a_403_or_429_that_says_rate_limit_is_one() {
        // GitHub's words, as its docs and its answers give them.
        assert!(says_rate_limit(403, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."));
        assert!(says_rate_limit(429, "You have exceeded a secondary rate limit and have been temporarily blocked from content creation."));
        assert!(says_rate_limit(403, "You have triggered an abuse detection mechanism. Please wait a few minutes before you try again."));
        assert!(says_rate_limit(
            403,
            "API rate limit exceeded for installation ID 4242."
        ));
        // Refusals stay refusals: waiting would only delay the run's failure.
        assert!(!says_rate_limit(
            403,
            "Resource not accessible by integration"
        ));
        assert!(!says_rate_limit(
            403,
            "Must have admin rights to Repository."
        ));
        assert!(!says_rate_limit(404, "secondary rate limit"));
        assert!(!says_rate_limit(422, "Reference does not exist"));
    }
}
