//! The trial log: every tracing event inside a trial's span becomes one line of the trial's
//! log (for the report, the test output and `trial.log`); events inside a step's span are
//! indented under the step's own line; events below info (libraries' debug output) are
//! left out. The same events go to stderr, filtered by
//! `RUST_LOG` (default `warn`), with their spans as context.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static LOGS: Mutex<BTreeMap<u64, Vec<String>>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(1);

/// Installs the subscriber: stderr (filtered by `RUST_LOG`) and the trial logs. Once per
/// process; if another subscriber is already installed, trial logs stay empty.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let stderr = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()));
        // the trial log is the lab's account at info and above; libraries' debug chatter
        // (hyper's connection pool, bollard) stays out
        let trial = TrialLogLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
        let _ = tracing_subscriber::registry().with(stderr).with(trial).try_init();
    });
}

/// One trial's lines, collected while its span is entered.
pub struct TrialLog {
    id: u64,
}

impl TrialLog {
    pub fn new() -> TrialLog {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        LOGS.lock().expect("trial logs").insert(id, Vec::new());
        TrialLog { id }
    }

    /// The span whose events this log collects.
    pub fn span(&self, trial: &str) -> tracing::Span {
        tracing::info_span!("trial", log = self.id, name = trial)
    }

    pub fn lines(&self) -> Vec<String> {
        LOGS.lock().expect("trial logs").get(&self.id).cloned().unwrap_or_default()
    }
}

impl Default for TrialLog {
    fn default() -> Self {
        TrialLog::new()
    }
}

impl Drop for TrialLog {
    fn drop(&mut self) {
        LOGS.lock().expect("trial logs").remove(&self.id);
    }
}

/// The log id a `trial` span carries.
struct LogId(u64);

struct TrialLogLayer;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for TrialLogLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "trial" {
            return;
        }
        let mut v = Fields::default();
        attrs.record(&mut v);
        if let (Some(log), Some(span)) = (v.log, ctx.span(id)) {
            span.extensions_mut().insert(LogId(log));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else { return };
        let mut in_step = false;
        let mut log = None;
        for span in scope {
            in_step |= span.name() == "step";
            if let Some(LogId(id)) = span.extensions().get::<LogId>() {
                log = Some(*id);
                break;
            }
        }
        let Some(id) = log else { return };
        let mut v = Fields::default();
        event.record(&mut v);
        let line = if in_step { format!("     {}", v.text) } else { v.text };
        if let Some(lines) = LOGS.lock().expect("trial logs").get_mut(&id) {
            lines.push(line);
        }
    }
}

/// An event's message and fields as one line (`message key=value …`).
#[derive(Default)]
struct Fields {
    text: String,
    log: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "log" {
            self.log = Some(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, "{}{}={value:?}", if self.text.is_empty() { "" } else { " " }, field.name());
        }
    }
}
