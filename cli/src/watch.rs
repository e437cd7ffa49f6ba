//! `reid watch`: the identity service's events as they happen, one JSON object per line (the
//! webhook's form, `reid_identity::events::Event`), reconnecting after the last event printed
//! when the connection drops.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use reid_identity::events::Event;
use reid_proto::v1 as pb;

use crate::identity::client;

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[arg(long, default_value = reid_proto::ports::IDENTITY)]
    addr: String,
    /// Start after this event's cursor (the `cursor` of the last line a previous watch printed).
    #[arg(long)]
    after: Option<String>,
    /// Start with the oldest event the service still keeps.
    #[arg(long, conflicts_with = "after")]
    from_oldest: bool,
    /// Only events about this identity (repeat for several).
    #[arg(long = "identity")]
    identities: Vec<String>,
    /// Only events about enrolled identities.
    #[arg(long)]
    enrolled_only: bool,
    /// Only sightings on this camera (repeat for several); other events pass.
    #[arg(long = "camera")]
    cameras: Vec<String>,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Exit when the connection drops instead of reconnecting after the last event printed.
    #[arg(long)]
    no_reconnect: bool,
}

/// Why one connection's stream stopped.
enum Stopped {
    Done,
    /// Worth reconnecting for: the server went away or is shutting down.
    Dropped(String),
}

pub async fn run(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let mut after = args.after.clone();
    let mut printed = 0u64;
    let mut backoff = Duration::from_millis(250);
    loop {
        let request = pb::WatchRequest {
            after: after.clone().unwrap_or_default(),
            from_oldest: args.from_oldest && after.is_none(),
            identity_ids: args.identities.clone(),
            enrolled_only: args.enrolled_only,
            cameras: args.cameras.clone(),
        };
        match follow(&args, request, &mut after, &mut printed).await? {
            Stopped::Done => return Ok(ExitCode::SUCCESS),
            Stopped::Dropped(why) if args.no_reconnect => anyhow::bail!("the event stream ended: {why}"),
            Stopped::Dropped(why) => {
                tracing::warn!(%why, after = after.as_deref().unwrap_or(""), "event stream dropped; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Prints the events of one connection; `after` and `printed` follow what was printed.
async fn follow(
    args: &WatchArgs,
    request: pb::WatchRequest,
    after: &mut Option<String>,
    printed: &mut u64,
) -> anyhow::Result<Stopped> {
    let dropped = |status: tonic::Status| -> anyhow::Result<Stopped> {
        if reid_server::client::is_transient(status.code()) {
            Ok(Stopped::Dropped(format!("{:?}: {}", status.code(), status.message())))
        } else {
            anyhow::bail!("watch failed: {:?}: {}", status.code(), status.message())
        }
    };
    let mut identity = match client(&args.addr).await {
        Ok(c) => c,
        Err(e) => return Ok(Stopped::Dropped(format!("{e:#}"))),
    };
    let mut stream = match identity.watch(request).await {
        Ok(r) => r.into_inner(),
        Err(status) => return dropped(status),
    };
    loop {
        if args.count.is_some_and(|n| *printed >= n) {
            return Ok(Stopped::Done);
        }
        let message = match stream.message().await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(Stopped::Dropped("the server closed the stream".into())),
            Err(status) => return dropped(status),
        };
        let event = Event::try_from(message).map_err(|e| anyhow::anyhow!("a malformed event: {e}"))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&event)?)?;
        out.flush()?;
        drop(out);
        *after = Some(event.cursor.to_string());
        *printed += 1;
    }
}
