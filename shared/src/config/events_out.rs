//! Where a worker sends the lifecycle events (docs/events.md): an HTTP endpoint, a Redis
//! stream, both or neither (the default: no event is kept).

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Env};

#[derive(Debug, Clone)]
pub struct EventsConfig {
    /// `SELFHEAL_EVENTS_HTTP_URL`, with `SELFHEAL_EVENTS_HTTP_TOKEN` sent as a bearer token.
    pub http: Option<HttpSink>,
    /// `SELFHEAL_EVENTS_REDIS_STREAM`: a stream on selfheal's Redis (`REDIS_URL`).
    pub redis_stream: Option<String>,
    /// `SELFHEAL_EVENTS_SOURCE` (`urn:selfheal`): the CloudEvents `source` of every event.
    pub source: String,
    /// `SELFHEAL_EVENTS_INTERVAL_MS` (1000): how often a worker looks for events to send.
    pub interval: Duration,
    /// `SELFHEAL_EVENTS_RETRY_MAX_SECS` (300): the longest pause between two tries of an
    /// event a sink refused (from 1 s, doubling).
    pub retry_max: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSink {
    pub url: url::Url,
    pub token: Option<SecretString>,
}

impl Default for EventsConfig {
    /// No sink: no event is kept.
    fn default() -> Self {
        EventsConfig {
            http: None,
            redis_stream: None,
            source: "urn:selfheal".into(),
            interval: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

impl EventsConfig {
    pub fn any(&self) -> bool {
        self.http.is_some() || self.redis_stream.is_some()
    }
}

pub(super) fn from_env<F: Fn(&str) -> Option<String>>(
    env: &Env<'_, F>,
) -> Result<EventsConfig, ConfigError> {
    let http = match env.optional("SELFHEAL_EVENTS_HTTP_URL") {
        None => None,
        Some(raw) => {
            let name = "SELFHEAL_EVENTS_HTTP_URL";
            let url = url::Url::parse(&raw).map_err(|e| ConfigError::Malformed {
                name,
                reason: e.to_string(),
            })?;
            // The events (repositories, branches, pull requests) and the token would travel in
            // clear over anything but TLS, unless they never leave the machine.
            let loopback = matches!(url.host(), Some(url::Host::Domain("localhost")))
                || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
                || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback());
            if !(url.scheme() == "https" || url.scheme() == "http" && loopback) {
                return Err(ConfigError::Malformed {
                    name,
                    reason: "must be https:// (http:// only to this machine's loopback)".into(),
                });
            }
            Some(HttpSink {
                url,
                token: env
                    .optional("SELFHEAL_EVENTS_HTTP_TOKEN")
                    .map(SecretString::from),
            })
        }
    };
    let defaults = EventsConfig::default();
    Ok(EventsConfig {
        http,
        redis_stream: env.optional("SELFHEAL_EVENTS_REDIS_STREAM"),
        source: env
            .optional("SELFHEAL_EVENTS_SOURCE")
            .unwrap_or(defaults.source),
        interval: match env.parsed::<u64>("SELFHEAL_EVENTS_INTERVAL_MS")? {
            Some(0) => {
                return Err(ConfigError::Malformed {
                    name: "SELFHEAL_EVENTS_INTERVAL_MS",
                    reason: "must be at least 1".into(),
                })
            }
            ms => Duration::from_millis(ms.unwrap_or(1000)),
        },
        retry_max: Duration::from_secs(
            env.parsed("SELFHEAL_EVENTS_RETRY_MAX_SECS")?.unwrap_or(300),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<EventsConfig, ConfigError> {
        let lookup = |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        from_env(&Env(&lookup))
    }

    #[test]
    fn an_http_sink_must_be_tls_unless_it_is_on_this_machine() {
        assert!(read(&[]).unwrap().http.is_none());
        for ok in [
            "https://events.example.com/in",
            "http://127.0.0.1:9000/in",
            "http://localhost/in",
            "http://[::1]:8080/",
        ] {
            assert!(
                read(&[("SELFHEAL_EVENTS_HTTP_URL", ok)])
                    .unwrap()
                    .http
                    .is_some(),
                "{ok}"
            );
        }
        for refused in [
            "http://events.example.com/in",
            "http://10.0.0.5/in",
            "ftp://x/",
            "not a url",
        ] {
            let err = read(&[("SELFHEAL_EVENTS_HTTP_URL", refused)]).unwrap_err();
            assert!(
                err.to_string().contains("SELFHEAL_EVENTS_HTTP_URL"),
                "{refused}: {err}"
            );
        }
    }
}
