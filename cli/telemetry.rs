//! Logs always; traces too when `OTEL_EXPORTER_OTLP_ENDPOINT` is set and the process is web or
//! a worker (docs/traces.md). `RUST_LOG` filters the log only: the traces take selfheal's own
//! spans at info, whatever the log shows.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Flushes the spans not exported yet when the process ends.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: the last spans may not have been exported: {e}");
            }
        }
    }
}

/// `service`: the `service.name` of the traces, for the processes that export them.
pub fn init(service: Option<&'static str>) -> Telemetry {
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,apalis=warn".into()),
        );
    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (Some(service), Some(endpoint)) = (service, endpoint) else {
        tracing_subscriber::registry().with(log).init();
        return Telemetry(None);
    };
    // The exporter appends /v1/traces to the endpoint, as the OTLP specification says.
    let exporter = match opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .build()
    {
        Ok(exporter) => exporter,
        Err(e) => {
            tracing_subscriber::registry().with(log).init();
            tracing::error!(error = %e, "OTEL_EXPORTER_OTLP_ENDPOINT: cannot export traces there; logging only");
            return Telemetry(None);
        }
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("selfheal"))
        .with_filter(Targets::new().with_target("selfheal", tracing::Level::INFO));
    tracing_subscriber::registry().with(log).with(traces).init();
    tracing::info!(service, "exporting traces over OTLP/HTTP");
    Telemetry(Some(provider))
}
