//! The W3C trace context (`traceparent`) a run's jobs carry, so that the run is one trace from
//! the webhook through every stage in whichever worker takes it (docs/traces.md). With tracing
//! off (no OpenTelemetry layer installed) there is no context: `current` is `None`.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The current span's context as a `traceparent` header value, when it is being traced.
pub fn current() -> Option<String> {
    let context = tracing::Span::current().context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the span `traceparent` names. The job gives the ids, not the
/// sampling decision: a job whose parent was sampled out (or that says so) is traced all the
/// same, since its flags travel through Redis, where anyone who can write a job can set them.
/// A malformed value is ignored: the span starts a trace of its own.
pub fn continue_in(span: &tracing::Span, traceparent: &str) {
    let Some(ids) = ids_of(traceparent) else {
        tracing::debug!(
            traceparent,
            "a job's traceparent is malformed; starting a new trace"
        );
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), format!("{ids}-01"))]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// `00-<32 hex trace id>-<16 hex span id>` of a well-formed version-00 `traceparent`.
fn ids_of(traceparent: &str) -> Option<&str> {
    let ids = traceparent.get(..52)?;
    let flags = traceparent.get(53..)?;
    let mut parts = ids.split('-');
    let ok = parts.next() == Some("00")
        && parts.next().is_some_and(|t| t.len() == 32 && hex(t))
        && parts.next().is_some_and(|s| s.len() == 16 && hex(s))
        && parts.next().is_none()
        && traceparent.as_bytes().get(52) == Some(&b'-')
        && flags.len() == 2
        && hex(flags);
    ok.then_some(ids)
}

fn hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_trace_contexts_are_continued() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            ids_of(good),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7")
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert_eq!(ids_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn without_a_tracer_there_is_no_context() {
        let span = tracing::info_span!("x");
        let _entered = span.enter();
        assert_eq!(current(), None);
    }
}
