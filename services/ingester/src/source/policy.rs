//! What a camera added over the API may read and connect to. Cameras in the ingester's own config
//! file are the operator's and are trusted; `AddCamera` comes from the network, so it may name
//! local files only below the configured roots, capture devices only when allowed, and streams only
//! on public addresses or on the hosts and ranges the operator listed: a camera URL must not turn
//! the ingester into a reader of its own disk or a client of services on its loopback or private
//! network (server-side request forgery).
//!
//! A refused path is refused the same way whether it exists or not, so the answer reveals nothing
//! about the server's files.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{IngesterError, IngesterResult};
use crate::source::SourceSpec;

/// `[sources]` in the ingester config.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SourcePolicy {
    /// Folders whose files and sub-folders `AddCamera` may read; none by default.
    pub file_roots: Vec<PathBuf>,
    /// Hosts `AddCamera` may stream from although they are loopback, link-local or private: host
    /// names, addresses, or CIDR ranges (`10.0.0.0/8`). Public addresses need no entry.
    pub stream_hosts: Vec<String>,
    /// Whether `AddCamera` may open local capture devices (`device:N`).
    pub allow_devices: bool,
}

impl SourcePolicy {
    /// Checks a source named over the API, before its URL is parsed (parsing looks at the file
    /// system, and what it says must not reach a caller for paths outside the roots).
    pub async fn check(&self, url: &str) -> IngesterResult<()> {
        let url = url.trim();
        if url == "push" {
            return Ok(());
        }
        if url.starts_with("device:") {
            return if self.allow_devices {
                Ok(())
            } else {
                Err(IngesterError::bad_url(url, "capture devices are not allowed over the API (sources.allow_devices)"))
            };
        }
        if url.contains("://") {
            return match SourceSpec::parse(url)? {
                SourceSpec::Stream(stream) => self.check_stream(url, &stream).await,
                _ => Ok(()),
            };
        }
        self.check_path(url, Path::new(url.strip_prefix("file:").unwrap_or(url)))
    }

    fn check_path(&self, url: &str, path: &Path) -> IngesterResult<()> {
        if reid_server::paths::is_confined(path, &self.file_roots) {
            return Ok(());
        }
        Err(IngesterError::bad_url(url, "local paths over the API must lie below one of sources.file_roots"))
    }

    async fn check_stream(&self, url: &str, stream: &str) -> IngesterResult<()> {
        let (host, port) = host_and_port(stream).ok_or_else(|| IngesterError::bad_url(url, "no host"))?;
        if self.stream_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host)) {
            return Ok(());
        }
        let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|_| IngesterError::bad_url(url, "the stream host does not resolve"))?
                .map(|a| a.ip())
                .collect(),
        };
        // Every address the name resolves to must be allowed: any one may be the one dialled.
        match addrs.iter().find(|ip| !is_public(**ip) && !self.stream_hosts.iter().any(|h| in_range(h, **ip))) {
            None if !addrs.is_empty() => Ok(()),
            _ => Err(IngesterError::bad_url(
                url,
                "the stream host is on a loopback, link-local or private address not listed in sources.stream_hosts",
            )),
        }
    }
}

/// The host (brackets removed) and port of `scheme://[user@]host[:port]/...`.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let default_port = match scheme {
        "rtsp" | "rtsps" => 554,
        "http" => 80,
        "https" => 443,
        "rtmp" => 1935,
        _ => 0,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default_port,
    };
    (!host.is_empty()).then(|| (host.to_ascii_lowercase(), port))
}

/// Reachable on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast or documentation space.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

/// Whether `ip` is the address, or lies in the CIDR range, that `entry` names.
fn in_range(entry: &str, ip: IpAddr) -> bool {
    let (net, bits) = match entry.split_once('/') {
        Some((net, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (net, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else { return false };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn hosts_and_ports_are_read_from_urls() {
        assert_eq!(host_and_port("rtsp://cam.local/stream1"), Some(("cam.local".into(), 554)));
        assert_eq!(host_and_port("rtsp://u:p@10.0.0.7:8554/s"), Some(("10.0.0.7".into(), 8554)));
        assert_eq!(host_and_port("http://[::1]:8080/x"), Some(("::1".into(), 8080)));
        assert_eq!(host_and_port("https://Example.com?x=1"), Some(("example.com".into(), 443)));
        assert_eq!(host_and_port("http:///x"), None);
    }

    #[test]
    fn private_ranges_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "151.101.1.1", "2a00:1450::1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(in_range("10.0.0.0/8", "10.200.1.1".parse().unwrap()));
        assert!(!in_range("10.0.0.0/8", "11.0.0.1".parse().unwrap()));
        assert!(in_range("127.0.0.1", "127.0.0.1".parse().unwrap()));
        assert!(!in_range("not a range", "127.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_api_reads_only_below_file_roots_and_says_nothing_of_other_files() {
        let root = tempfile::tempdir().unwrap();
        let video = root.path().join("a.avi");
        std::fs::write(&video, b"x").unwrap();
        let policy = SourcePolicy { file_roots: vec![root.path().to_path_buf()], ..SourcePolicy::default() };
        let check = |p: &Path| policy.check_path("u", p).map_err(|e| e.to_string());
        assert!(check(&video).is_ok());
        let outside = check(Path::new("/etc/passwd")).unwrap_err();
        let missing = check(Path::new("/etc/no-such-file")).unwrap_err();
        assert_eq!(outside, missing, "a refusal must not tell whether the file exists");
        assert!(check(&root.path().join("..").join("x")).is_err());
        assert!(check(&root.path().join("missing.avi")).is_ok(), "below a root, parsing says what is missing");
        #[cfg(unix)]
        {
            let link = root.path().join("escape");
            std::os::unix::fs::symlink("/etc", &link).unwrap();
            assert!(check(&link.join("passwd")).is_err(), "a link out of the root was followed");
        }
        assert!(SourcePolicy::default().check_path("u", &video).is_err(), "no roots: no files");
    }

    #[tokio::test]
    async fn streams_to_private_hosts_need_an_entry() {
        let policy = SourcePolicy::default();
        for url in [
            "http://127.0.0.1:8080/x",
            "rtsp://10.0.0.7/s",
            "http://localhost/x",
            "http://[::1]/x",
            "http://169.254.169.254/latest",
        ] {
            assert!(policy.check(url).await.is_err(), "{url}");
        }
        assert!(policy.check("rtsp://8.8.8.8/s").await.is_ok());
        let listed =
            SourcePolicy { stream_hosts: vec!["10.0.0.0/8".into(), "localhost".into()], ..SourcePolicy::default() };
        assert!(listed.check("rtsp://10.0.0.7/s").await.is_ok());
        assert!(listed.check("http://localhost/x").await.is_ok());
        assert!(listed.check("http://127.0.0.1/x").await.is_err());
        assert!(policy.check("device:0").await.is_err());
        assert!(policy.check("push").await.is_ok());
        assert!(policy.check("/etc/passwd").await.is_err());
    }
}
