//! The hub path: `hf-hub` (feature `hub`, ureq client) against
//! `{endpoint}/{repo}/resolve/{revision}/{file}`.
//!
//! hf-hub downloads into its own cache layout under `{cache}/hub` (a `.part`
//! file, renamed to `blobs/{etag}` when complete, linked from
//! `snapshots/{commit}/{file}`). It does not check the content, so we do:
//! the blob is hashed, deleted with its link on a mismatch, and moved to the
//! dataset's cache path only when it matches. A connection dropped halfway
//! leaves only the `.part` file, which the next attempt resumes.

use super::FetchOptions;
use super::manifest::{FileEntry, HubSource};
use crate::error::{Error, Result};
use std::path::Path;
use std::time::Duration;

/// Split `scheme://host[:port][/...]` into host and port.
pub fn endpoint_host_port(endpoint: &str) -> Result<(String, u16)> {
    let (scheme, rest) =
        endpoint.split_once("://").ok_or_else(|| Error::invalid(format!("hub endpoint '{endpoint}' is not a URL")))?;
    let default_port = match scheme {
        "http" => 80,
        "https" => 443,
        _ => return Err(Error::invalid(format!("hub endpoint '{endpoint}': scheme must be http or https"))),
    };
    let authority = rest.split('/').next().unwrap_or("");
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| Error::invalid("bad IPv6 endpoint"))?;
        let port = after.strip_prefix(':').map(|p| p.parse::<u16>()).transpose();
        let port = port.map_err(|_| Error::invalid(format!("hub endpoint '{endpoint}': bad port")))?;
        return Ok((host.to_string(), port.unwrap_or(default_port)));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => {
            let port = p.parse::<u16>().map_err(|_| Error::invalid(format!("hub endpoint '{endpoint}': bad port")))?;
            Ok((h.to_string(), port))
        }
        None if authority.is_empty() => Err(Error::invalid(format!("hub endpoint '{endpoint}' has no host"))),
        None => Ok((authority.to_string(), default_port)),
    }
}

fn proxy_configured() -> bool {
    ["ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Can a TCP connection to the endpoint be opened within `timeout`? (Name
/// resolution included: it runs on a helper thread so a stuck resolver cannot
/// hold us longer than the timeout.) Skipped when a proxy is configured, since
/// then the proxy, not the hub, is what we connect to.
pub fn probe(endpoint: &str, timeout: Duration) -> Result<()> {
    if proxy_configured() {
        return Ok(());
    }
    let (host, port) = endpoint_host_port(endpoint)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let h = host.clone();
    std::thread::spawn(move || {
        use std::net::ToSocketAddrs;
        let r = (|| -> std::result::Result<(), String> {
            let addrs: Vec<_> =
                (h.as_str(), port).to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?.collect();
            let mut last = String::from("no address");
            for a in addrs {
                match std::net::TcpStream::connect_timeout(&a, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("{a}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout + Duration::from_millis(200)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::network(format!("cannot connect to {host}:{port} ({e})"))),
        Err(_) => Err(Error::network(format!("no connection to {host}:{port} within {:.1} s", timeout.as_secs_f64()))),
    }
}

/// The token: `HF_TOKEN`, else the hub's token file (`$HF_TOKEN_PATH`,
/// `$HF_HOME/token`, `~/.cache/huggingface/token`).
pub fn token_from_env() -> Option<String> {
    if let Ok(t) = std::env::var("HF_TOKEN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_string());
    }
    let path = if let Some(p) = std::env::var_os("HF_TOKEN_PATH") {
        p.into()
    } else if let Some(h) = std::env::var_os("HF_HOME") {
        std::path::PathBuf::from(h).join("token")
    } else {
        super::home_dir()?.join(".cache/huggingface/token")
    };
    let t = std::fs::read_to_string(path).ok()?;
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

#[cfg(feature = "hub")]
struct Bar(indicatif::ProgressBar);

#[cfg(feature = "hub")]
impl hf_hub::api::Progress for Bar {
    fn init(&mut self, size: usize, _filename: &str) {
        self.0.set_length(size as u64);
    }
    fn update(&mut self, size: usize) {
        self.0.inc(size as u64);
    }
    fn finish(&mut self) {}
}

#[cfg(feature = "hub")]
fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Download `file` of `hub` into `dest` (the dataset's cache path), verified.
/// Returns the sha256 that was checked.
#[cfg(feature = "hub")]
pub fn fetch(
    hub: &HubSource,
    file: &FileEntry,
    dest: &Path,
    cache_root: &Path,
    endpoint: &str,
    opts: &FetchOptions,
) -> Result<String> {
    use hf_hub::api::sync::ApiBuilder;
    use hf_hub::{Repo, RepoType};

    probe(endpoint, opts.connect_timeout)?;
    let staging = cache_root.join("hub");
    let token = opts.token.clone().or_else(token_from_env);
    let api = ApiBuilder::from_cache(hf_hub::Cache::new(staging))
        .with_endpoint(endpoint.trim_end_matches('/').to_string())
        .with_token(token)
        .with_progress(false)
        .with_retries(0)
        .with_user_agent("weightlab", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| Error::network(format!("hub client: {e}")))?;
    let repo_type = match hub.repo_type.as_str() {
        "dataset" => RepoType::Dataset,
        "space" => RepoType::Space,
        _ => RepoType::Model,
    };
    let repo = api.repo(Repo::with_revision(hub.repo.clone(), repo_type, hub.revision.clone()));
    let url = repo.url(&file.path);
    let meta = api.metadata(&url).map_err(|e| Error::network(format!("{url}: {e}")))?;
    if let Some(size) = file.size
        && size != meta.size() as u64
    {
        return Err(Error::hash_mismatch(format!("{url}: the hub says {} bytes, the manifest {size}", meta.size())));
    }
    let expected = match &file.sha256 {
        Some(h) => h.clone(),
        None if is_sha256(meta.etag()) => meta.etag().to_ascii_lowercase(),
        None => {
            return Err(Error::invalid(format!(
                "{url}: the manifest has no sha256 and the hub's ETag '{}' is not one; refusing an unverifiable file",
                meta.etag()
            )));
        }
    };
    // A leftover `.part` as long as the file (or longer) cannot be resumed: start over.
    let cache = hf_hub::Cache::new(cache_root.join("hub"));
    let repo_key = Repo::with_revision(hub.repo.clone(), repo_type, hub.revision.clone());
    let part = cache.repo(repo_key).blob_path(meta.etag()).with_extension("part");
    if std::fs::metadata(&part).is_ok_and(|m| m.len() >= meta.size() as u64) {
        let _ = std::fs::remove_file(&part);
    }
    let bar = crate::progress::bytes_bar(meta.size() as u64, &file.path, opts.progress);
    let got = repo.download_with_progress(&file.path, Bar(bar.clone()));
    bar.finish_and_clear();
    let link = got.map_err(|e| Error::network(format!("{url}: {e}")))?;
    let blob = std::fs::canonicalize(&link).map_err(|e| Error::io(format!("resolving {}", link.display()), e))?;
    let actual = crate::io::sha256_file(&blob)?;
    if actual != expected {
        let _ = std::fs::remove_file(&blob);
        let _ = std::fs::remove_file(&link);
        if let Some(snap) = link.parent() {
            let _ = std::fs::remove_dir(snap);
        }
        let repo_dir = cache_root
            .join("hub")
            .join(Repo::with_revision(hub.repo.clone(), repo_type, hub.revision.clone()).folder_name());
        let _ = std::fs::remove_file(repo_dir.join("refs").join(&hub.revision));
        return Err(Error::hash_mismatch(format!(
            "{} from {url}: sha256 mismatch: expected {expected}, got {actual} (download deleted)",
            file.path
        )));
    }
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    if file.sha256.is_none() {
        // the hub's hash, kept to re-check the cached copy; written before the
        // file appears so no reader sees the file without it
        super::write_sidecar(dest, &actual, "hub")?;
    }
    // Same file system (both under the cache root): a rename is atomic.
    std::fs::rename(&blob, dest)
        .or_else(|_| {
            let tmp = crate::io::temp_path(dest);
            std::fs::copy(&blob, &tmp).and_then(|_| std::fs::rename(&tmp, dest)).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
            std::fs::remove_file(&blob)
        })
        .map_err(|e| Error::io(format!("moving {} to {}", blob.display(), dest.display()), e))?;
    let _ = std::fs::remove_file(&link);
    Ok(actual)
}

/// Without the `hub` feature there is no hub client.
#[cfg(not(feature = "hub"))]
pub fn fetch(
    _hub: &HubSource,
    _file: &FileEntry,
    _dest: &Path,
    _cache_root: &Path,
    _endpoint: &str,
    _opts: &FetchOptions,
) -> Result<String> {
    Err(Error::unsupported("the hub client is not compiled in (build with `--features hub`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(endpoint_host_port("https://huggingface.co").unwrap(), ("huggingface.co".into(), 443));
        assert_eq!(endpoint_host_port("http://127.0.0.1:8080/x").unwrap(), ("127.0.0.1".into(), 8080));
        assert_eq!(endpoint_host_port("http://[::1]:9/").unwrap(), ("::1".into(), 9));
        assert_eq!(endpoint_host_port("http://host").unwrap(), ("host".into(), 80));
        assert!(endpoint_host_port("ftp://x").is_err());
        assert!(endpoint_host_port("nope").is_err());
    }

    #[test]
    fn probe_fails_fast_on_a_closed_port() {
        // bind then drop: the port is (almost surely) closed now
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t0 = std::time::Instant::now();
        let r = probe(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2));
        if !proxy_configured() {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::Network);
            assert!(t0.elapsed() < Duration::from_secs(3));
        }
    }
}
