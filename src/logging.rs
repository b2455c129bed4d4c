//! Log output: `--log.format logfmt` (`ts=... level=... target=... msg="..."
//! key=value`, the Prometheus exporters' default) or `json` (one object per
//! line), to stderr, filtered by `--log.level`.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs, values quoted when needed.
    Logfmt,
}

/// Install the global subscriber. `level` is a level name or a tracing filter.
///
/// # Errors
/// A `level` that is neither a level name nor a valid filter: said, never
/// silently replaced by `info`.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = filter(level)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // Already installed (tests that start the daemon twice): keep the first.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Logfmt => builder.event_format(Logfmt).try_init(),
    };
    Ok(())
}

const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];

/// A level name, or a tracing filter with directives (`mqaudit=debug,info`).
/// A bare word that is not a level is refused: tracing would read it as a
/// target name and silently log next to nothing.
fn filter(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let directives = level.contains(['=', ',', '[']);
    if !directives && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{level:?} is not a log level ({}) or a filter such as mqaudit=debug,info",
            LEVELS.join(", ")
        ));
    }
    tracing_subscriber::EnvFilter::builder()
        .parse(level)
        .map_err(|e| format!("{level:?} is not a valid filter: {e}"))
}

/// The logfmt event formatter.
pub struct Logfmt;

impl<S, N> FormatEvent<S, N> for Logfmt
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        let meta = event.metadata();
        let mut line = String::new();
        let _ = write!(
            line,
            "ts={} level={} target={}",
            ts,
            meta.level().as_str().to_ascii_lowercase(),
            meta.target()
        );
        event.record(&mut Pairs(&mut line));
        writeln!(writer, "{line}")
    }
}

struct Pairs<'a>(&'a mut String);

impl Visit for Pairs<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        push(self.0, field.name(), value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        push(self.0, field.name(), &format!("{value:?}"));
    }
}

/// Append ` key=value`, quoting and escaping the value when needed.
fn push(line: &mut String, key: &str, value: &str) {
    let key = if key == "message" { "msg" } else { key };
    line.push(' ');
    line.push_str(key);
    line.push('=');
    let needs_quotes = value.is_empty()
        || value
            .chars()
            .any(|c| c == ' ' || c == '=' || c == '"' || c.is_control());
    if needs_quotes {
        line.push('"');
        for c in value.chars() {
            match c {
                '"' => line.push_str("\\\""),
                '\\' => line.push_str("\\\\"),
                '\n' => line.push_str("\\n"),
                c => line.push(c),
            }
        }
        line.push('"');
    } else {
        line.push_str(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_filters_are_accepted_and_anything_else_refused() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "mqaudit=debug,info",
            "warn,mqaudit::audit=trace",
        ] {
            assert!(filter(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "", "inf", "mqaudit=loud"] {
            assert!(filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        let mut line = String::new();
        push(&mut line, "message", "Collector failed.");
        push(&mut line, "cluster", "prod");
        push(&mut line, "error", "say \"hi\"\nthen=go");
        push(&mut line, "empty", "");
        assert_eq!(
            line,
            " msg=\"Collector failed.\" cluster=prod error=\"say \\\"hi\\\"\\nthen=go\" empty=\"\""
        );
    }
}
