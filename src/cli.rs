//! The command line: argument parsing, logging set-up, and each command's
//! entry point. Exit codes: 0 success, 1 runtime failure, 64 usage error.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::admin::{AclCredentials, Admin, Cluster};
use crate::clock::Clock;
use crate::config::{Config, Overrides};
use crate::doctor;

/// Exit code for a bad command line or configuration (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// mqaudit watches Apache RocketMQ for message loss.
#[derive(Debug, Parser)]
#[command(name = "mqaudit", version, about)]
pub struct Cli {
    /// Log level: error, warn, info, debug or trace (or a tracing filter).
    #[arg(long = "log.level", global = true, default_value = "info")]
    pub log_level: String,
    /// Log format.
    #[arg(long = "log.format", global = true, value_enum, default_value_t = crate::logging::LogFormat::Logfmt)]
    pub log_format: crate::logging::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Report format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputFormat {
    /// For a terminal.
    Text,
    /// Stable JSON (see docs/doctor.md).
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the exporter: collect every interval, serve /metrics.
    Serve(ServeArgs),
    /// Validate a configuration file and exit (64 when invalid).
    CheckConfig(CheckConfigArgs),
    /// The message-loss checklist against a live cluster, as a report.
    Doctor(DoctorArgs),
    /// Audit one flow's windows now (the daemon does it on the flow's schedule).
    Audit(AuditArgs),
    /// One key's full chain: findings, trace records, where the broker has it,
    /// the group's offset, the DLQ.
    Lookup(LookupArgs),
}

/// `mqaudit audit` options.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// TOML configuration file with the flow.
    #[arg(long)]
    pub config: String,
    /// Flow name.
    #[arg(long)]
    pub flow: String,
    /// Run once and exit (required: scheduled audits run in `serve`).
    #[arg(long, required = true)]
    pub once: bool,
    /// Audit the windows overlapping [from, to) (epoch ms or RFC 3339)
    /// instead of the scheduled selection.
    #[arg(long, requires = "to")]
    pub from: Option<String>,
    /// End of the range.
    #[arg(long, requires = "from")]
    pub to: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// `mqaudit lookup` options.
#[derive(Debug, clap::Args)]
pub struct LookupArgs {
    /// TOML configuration file with the flow.
    #[arg(long)]
    pub config: String,
    /// Flow name.
    #[arg(long)]
    pub flow: String,
    /// The key.
    #[arg(long)]
    pub key: String,
}

/// `mqaudit serve` options. Flags override the file.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file (see config/example.toml).
    #[arg(long)]
    pub config: Option<String>,
    /// Name server host:port. Without --config: watch this one cluster with
    /// defaults. With a one-cluster file: replaces its name servers.
    #[arg(long)]
    pub namesrv: Option<String>,
    /// Address to listen on.
    #[arg(long = "web.listen-address")]
    pub listen_address: Option<String>,
    /// Path of the metrics endpoint.
    #[arg(long = "web.telemetry-path")]
    pub telemetry_path: Option<String>,
    /// Exporter-toolkit web config file (TLS, basic auth).
    #[arg(long = "web.config.file")]
    pub web_config_file: Option<String>,
    /// Seconds between collection cycles.
    #[arg(long = "collect.interval-seconds")]
    pub interval_seconds: Option<u64>,
    /// Timeout of each admin call, in seconds (below the interval).
    #[arg(long = "collect.timeout-seconds")]
    pub timeout_seconds: Option<u64>,
}

/// `mqaudit check-config` options.
#[derive(Debug, clap::Args)]
pub struct CheckConfigArgs {
    /// TOML configuration file.
    #[arg(long)]
    pub config: String,
}

/// `mqaudit doctor` options.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Name server address, host:port.
    #[arg(long)]
    pub namesrv: String,
    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Timeout of each admin call, in seconds.
    #[arg(long = "timeout-seconds", default_value_t = 5)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub acl: AclArgs,
}

/// ACL 1.0 credentials, read from environment variables so secrets stay off
/// the command line (and out of `ps`).
#[derive(Debug, clap::Args)]
pub struct AclArgs {
    /// Environment variable holding the ACL access key (ACL is off when unset).
    #[arg(long = "acl.access-key-env")]
    pub access_key_env: Option<String>,
    /// Environment variable holding the ACL secret key.
    #[arg(long = "acl.secret-key-env")]
    pub secret_key_env: Option<String>,
}

impl AclArgs {
    /// The credentials, if configured.
    ///
    /// # Errors
    /// When only one variable is named, or a named variable is unset.
    pub fn credentials(&self) -> Result<Option<AclCredentials>, String> {
        let read = |name: &str| {
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
        };
        match (&self.access_key_env, &self.secret_key_env) {
            (None, None) => Ok(None),
            (Some(ak), Some(sk)) => Ok(Some(AclCredentials {
                access_key: read(ak)?,
                secret_key: read(sk)?,
                security_token: None,
            })),
            _ => Err(
                "--acl.access-key-env and --acl.secret-key-env must be given together".to_string(),
            ),
        }
    }
}

/// Parse the command line, run the command, return the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(message) = crate::logging::init(&cli.log_level, cli.log_format) {
        eprintln!("mqaudit: --log.level: {message}");
        return ExitCode::from(EXIT_USAGE);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mqaudit: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => run_serve(args).await,
            Command::CheckConfig(args) => run_check_config(&args.config),
            Command::Doctor(args) => run_doctor(args).await,
            Command::Audit(args) => run_audit(args).await,
            Command::Lookup(args) => run_lookup(args).await,
        }
    })
}

/// Read and validate a config file; the message names the file, line and reason.
fn load_config(path: &str) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    Config::from_toml_str(&text, |name| std::env::var(name).ok())
        .map_err(|e| format!("{path}: {e}"))
}

fn run_check_config(path: &str) -> ExitCode {
    let checked = load_config(path).and_then(|config| match &config.web.config_file {
        Some(web) => crate::http::WebSecurity::load(web).map(|_| config),
        None => Ok(config),
    });
    match checked {
        Ok(config) => {
            println!("{path}: valid ({} cluster(s))", config.clusters.len());
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("mqaudit check-config: {message}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// The configuration `serve` runs with: the file (or defaults for
/// --namesrv), flags applied to it before it is resolved and checked.
fn serve_config(args: &ServeArgs) -> Result<Config, String> {
    let overrides = Overrides {
        namesrv: args.namesrv.clone(),
        listen_address: args.listen_address.clone(),
        telemetry_path: args.telemetry_path.clone(),
        web_config_file: args.web_config_file.clone(),
        interval_seconds: args.interval_seconds,
        timeout_seconds: args.timeout_seconds,
    };
    match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
            Config::from_toml_with(&text, &overrides, |name| std::env::var(name).ok())
                .map_err(|e| format!("{path}: {e}"))
        }
        None if args.namesrv.is_some() => {
            Config::for_namesrv_with(&overrides).map_err(|e| e.to_string())
        }
        None => Err("give --config FILE or --namesrv HOST:PORT".to_string()),
    }
}

async fn run_serve(args: ServeArgs) -> ExitCode {
    let config = match serve_config(&args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("mqaudit serve: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match crate::app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error @ (crate::app::StartError::WebConfig(_) | crate::app::StartError::Audit(_))) => {
            eprintln!("mqaudit serve: {error}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(error) => {
            eprintln!("mqaudit serve: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run_doctor(args: DoctorArgs) -> ExitCode {
    let acl = match args.acl.credentials() {
        Ok(acl) => acl,
        Err(message) => {
            eprintln!("mqaudit doctor: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let timeout = Duration::from_secs(args.timeout_seconds.max(1));
    let cluster = Cluster::new(
        "doctor",
        vec![args.namesrv.clone()],
        Admin::connect(timeout, acl),
    );
    match doctor::examine(&cluster).await {
        Ok(report) => {
            match args.format {
                OutputFormat::Text => print!("{}", doctor::render_text(&report)),
                OutputFormat::Json => match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("mqaudit doctor: cannot encode the report: {error}");
                        return ExitCode::FAILURE;
                    }
                },
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(message = "Cannot read the cluster from the name server.", namesrv = %args.namesrv, %error);
            eprintln!(
                "mqaudit doctor: cannot read cluster info from {}: {error}",
                args.namesrv
            );
            ExitCode::FAILURE
        }
    }
}

/// Parse a time given as epoch milliseconds or RFC 3339.
fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| format!("{text:?} is neither epoch milliseconds nor an RFC 3339 time"))
}

/// The auditor of one flow from a config file.
async fn auditor(path: &str, flow: &str) -> Result<crate::audit::runner::Auditor, String> {
    let config = load_config(path)?;
    let flow_config = config
        .flows
        .iter()
        .find(|f| f.name == flow)
        .cloned()
        .ok_or_else(|| format!("{path}: no [[flow]] named {flow:?}"))?;
    let cluster = config
        .clusters
        .iter()
        .find(|c| c.name == flow_config.cluster)
        .cloned()
        .ok_or_else(|| format!("{path}: no cluster {:?}", flow_config.cluster))?;
    let store = crate::audit::store::Store::open_configured(&config.audit)
        .await
        .map_err(|e| e.to_string())?;
    let admin = Admin::connect(config.collect.timeout, cluster.acl.clone());
    // One run: nothing read is kept for a next one.
    let audit = crate::config::AuditConfig {
        reuse_budget: 0,
        ..config.audit.clone()
    };
    Ok(crate::audit::runner::Auditor::new(
        flow_config,
        audit,
        store,
        Cluster::new(cluster.name.clone(), cluster.namesrv.clone(), admin),
        Clock::system(),
    ))
}

async fn run_audit(args: AuditArgs) -> ExitCode {
    let range = match (&args.from, &args.to) {
        (Some(from), Some(to)) => match (parse_time(from), parse_time(to)) {
            (Ok(f), Ok(t)) if f < t => Some((f, t)),
            (Ok(_), Ok(_)) => {
                eprintln!("mqaudit audit: --from must be before --to");
                return ExitCode::from(EXIT_USAGE);
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("mqaudit audit: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        _ => None,
    };
    let auditor = match auditor(&args.config, &args.flow).await {
        Ok(a) => a,
        Err(message) => {
            eprintln!("mqaudit audit: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    use std::io::IsTerminal as _;
    let terminal = std::io::stderr().is_terminal();
    let progress = move |done: usize, total: usize| {
        if terminal && total > 1 {
            eprint!("\r[audit] window {done}/{total} ");
            if done == total {
                eprintln!();
            }
        }
    };
    match auditor
        .run(auditor.clock().now_ms(), range, &progress)
        .await
    {
        Ok(summary) => {
            match args.format {
                OutputFormat::Json => match serde_json::to_string_pretty(&summary) {
                    Ok(json) => println!("{json}"),
                    Err(error) => {
                        eprintln!("mqaudit audit: cannot encode the summary: {error}");
                        return ExitCode::FAILURE;
                    }
                },
                OutputFormat::Text => print!("{}", render_summary(&summary)),
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("mqaudit audit: flow {}: {error}", args.flow);
            ExitCode::FAILURE
        }
    }
}

fn render_summary(summary: &crate::audit::runner::RunSummary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flow {}: {} window(s) audited, {} trace message(s) read",
        summary.flow,
        summary.windows.len(),
        summary.trace_messages
    );
    for w in &summary.windows {
        let start = chrono::DateTime::from_timestamp_millis(w.start_ms)
            .map_or_else(|| format!("{} ms", w.start_ms), |t| t.to_rfc3339());
        let _ = writeln!(
            out,
            "  {start} +{}s{}: produced {}, consumed {}, duplicated {}, orphaned {}, resolved late {}",
            (w.end_ms - w.start_ms) / 1000,
            if w.final_ { " (final)" } else { "" },
            w.produced,
            w.consumed,
            w.duplicated,
            w.orphaned,
            w.resolved
        );
        for (status, stages) in &w.missing {
            for (stage, count) in stages {
                let _ = writeln!(out, "    missing {count}: {status} at stage {stage}");
            }
        }
    }
    out
}

async fn run_lookup(args: LookupArgs) -> ExitCode {
    let auditor = match auditor(&args.config, &args.flow).await {
        Ok(a) => a,
        Err(message) => {
            eprintln!("mqaudit lookup: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match crate::audit::lookup::chain(&auditor, &args.key, auditor.clock().now_ms()).await {
        Ok(chain) => match serde_json::to_string_pretty(&chain) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mqaudit lookup: cannot encode the chain: {error}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("mqaudit lookup: {error}");
            ExitCode::FAILURE
        }
    }
}
