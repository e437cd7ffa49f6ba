//! `reid`: runs the services and talks to them. `main` parses, sets up logging and dispatches.

mod adapt;
mod client;
mod eval;
mod identity;
mod ingester;
mod keys;
mod lab;
mod playback;
mod serve;
mod settings;
mod train;
mod up;
mod watch;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "reid", version, about = "Person and face re-identification over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    security: client::SecurityArgs,
    /// Log lines as text, or as JSON objects (one per line) for log collectors.
    #[arg(long, global = true, env = "REID_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole system in this process: the four services on ports 50051-50054, the
    /// embedded Qdrant engine under --data, the default model.
    Up(up::UpArgs),
    /// Runs one service.
    #[command(subcommand)]
    Serve(serve::ServeCommand),
    /// Makes the API keys of a deployment (docker compose runs it first).
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Checks a server's gRPC health; exits 0 only when it is SERVING.
    Health(client::HealthArgs),
    /// Embeds image files through an embedder; prints one JSON object per image.
    Embed(client::EmbedArgs),
    /// Enrolls a person from image files into the identity service; prints the identity as JSON.
    Enroll(identity::EnrollArgs),
    /// Identifies image files against the identity service; prints one JSON object per image.
    Identify(identity::IdentifyArgs),
    /// Erases an identity: its vectors, payloads and stored crops.
    Forget(identity::ForgetArgs),
    /// Prints where and when an identity was seen, as JSON.
    Sightings(identity::SightingsArgs),
    /// Lists the known identities, one JSON object per line.
    Identities(identity::IdentitiesArgs),
    /// An operator's corrections (confirm, reject, merge, split), or with no subcommand the
    /// recorded feedback pairs as JSON lines, for training.
    Feedback(identity::FeedbackArgs),
    /// Follows the identity service's events (sightings, merges, splits, enrollments, erasures)
    /// as they happen, one JSON object per line; reconnects after the last one printed.
    Watch(watch::WatchArgs),
    /// Adds, lists and removes the cameras of a running ingester.
    #[command(subcommand)]
    Cameras(ingester::CamerasCommand),
    /// Tracklets as training data.
    #[command(subcommand)]
    Tracklets(ingester::TrackletsCommand),
    /// Trains an embedding model (in-process, or on a trainer service with --addr).
    Train(train::TrainArgs),
    /// Adapts the served model to the cameras' exported tracklets and replaces it only if the
    /// operators' feedback pairs say the candidate is better.
    Adapt(adapt::AdaptArgs),
    /// Experiments that write their figures into docs/.
    #[command(subcommand)]
    Experiment(lab::experiment::ExperimentCommand),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(lab::bench::BenchCommand),
    /// Scores the detector and tracker against MOTChallenge ground truth (docs/evaluation.md).
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Runs what exists of the pipeline on this machine and prints what happened.
    Demo(lab::demo::DemoArgs),
}

/// `RUST_LOG` overrides it. qdrant-edge warns at every segment it opens that process-wide flags a
/// Qdrant server sets in its own `main` were not set; an embedded store has none to set.
const DEFAULT_LOG_FILTER: &str = "info,qdrant_edge::common=error";

/// An environment variable set to the empty string counts as unset, for every option of every
/// command: compose and Kubernetes pass `${VAR:-}` as "" when the host has none.
fn empty_env_is_unset(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let empty = arg.get_env().and_then(std::env::var_os).is_some_and(|v| v.is_empty());
            if empty { arg.env(None) } else { arg }
        })
        .mut_subcommands(empty_env_is_unset)
}

/// Printing commands end quietly when their reader goes away (`reid identities | head -3`), as
/// Unix tools do: SIGPIPE ends the process instead of a panic in `println!`. Servers keep Rust's
/// default (the signal ignored), so that a closed log pipe cannot kill them.
#[allow(unsafe_code)]
fn exit_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: called at the top of `main`, before any other thread exists; resetting a signal's
    // disposition to its default has no other precondition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// FFmpeg may open only what camera sources need: no `concat:`, `subfile:`, `pipe:`, `fd:`, FTP
/// or other protocols a playlist could smuggle in. OpenCV reads this at every open; an operator's
/// own setting is kept.
#[allow(unsafe_code)]
fn restrict_ffmpeg_protocols() {
    const VAR: &str = "OPENCV_FFMPEG_CAPTURE_OPTIONS";
    if std::env::var_os(VAR).is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists, so nothing reads
        // the environment concurrently.
        unsafe {
            std::env::set_var(
                VAR,
                "protocol_whitelist;file,crypto,data,http,https,tcp,tls,udp,rtp,srtp,rtsp,rtsps,rtmp,rtmps",
            );
        }
    }
}

fn parse() -> Cli {
    let matches = empty_env_is_unset(Cli::command()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() -> std::process::ExitCode {
    restrict_ffmpeg_protocols();
    let cli = parse();
    if !matches!(cli.command, Command::Up(_) | Command::Serve(_)) {
        exit_quietly_on_closed_pipe();
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| DEFAULT_LOG_FILTER.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Err(e) = client::set_security(&cli.security) {
        eprintln!("error: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Serve(cmd) => serve::run(cmd).await,
            Command::Keys(cmd) => keys::run(cmd),
            Command::Health(args) => client::health(args).await,
            Command::Embed(args) => client::embed(args).await,
            Command::Enroll(args) => identity::enroll(args).await,
            Command::Identify(args) => identity::identify(args).await,
            Command::Forget(args) => identity::forget(args).await,
            Command::Sightings(args) => identity::sightings(args).await,
            Command::Identities(args) => identity::identities(args).await,
            Command::Feedback(args) => identity::feedback(args).await,
            Command::Watch(args) => watch::run(args).await,
            Command::Cameras(cmd) => ingester::cameras(cmd).await,
            Command::Tracklets(cmd) => ingester::tracklets(cmd).await,
            Command::Train(args) => train::run(args).await,
            Command::Adapt(args) => adapt::run(args).await,
            Command::Experiment(cmd) => lab::experiment::run(cmd).await,
            Command::Bench(cmd) => lab::bench::run(cmd).await,
            Command::Eval(cmd) => eval::run(cmd).await,
            Command::Demo(args) => lab::demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
