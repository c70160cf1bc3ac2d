//! `GET` / `POST /files` on the sandbox API (port 49983) against a real agent and real files:
//! downloads (whole, ranges, conditional, gzip), uploads (multipart, octet-stream, gzip),
//! metadata xattrs, users, signed URLs, bad inputs, and uploads that fail half way, which must
//! leave the target as it was and no temporary file behind.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kernelbox::envd::files::signature::{sign, Operation};
use kernelbox::envd::UPLOAD_TEMP_PREFIX;
use serde_json::Value;

/// One agent for the tests without a token (no default contexts: only envd matters here).
fn agent() -> &'static (String, PathBuf) {
    static AGENT: OnceLock<(String, PathBuf)> = OnceLock::new();
    AGENT.get_or_init(|| start_parked(&[]))
}

const TOKEN: &str = "test-token-5f2c";

/// One agent with an access token.
fn secured_agent() -> &'static (String, PathBuf) {
    static AGENT: OnceLock<(String, PathBuf)> = OnceLock::new();
    AGENT.get_or_init(|| start_parked(&[("KERNELBOX_ACCESS_TOKEN", TOKEN)]))
}

/// Starts an agent on a thread that lives as long as the test binary (its death signal is tied
/// to the starting thread); returns its envd URL and workdir.
fn start_parked(env: &'static [(&'static str, &'static str)]) -> (String, PathBuf) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let workdir = common::tempdir("envd-files");
        let agent = common::Agent::start_with_env(&workdir, &["--default-languages", ""], env);
        let _ = tx.send((agent.envd_url.clone(), workdir));
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("agent started")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

fn files_url(base: &str, params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&format!("{base}/files")).expect("url");
    for (k, v) in params {
        url.query_pairs_mut().append_pair(k, v);
    }
    url.to_string()
}

/// A fresh folder for one test, inside the agent's workdir.
fn test_dir(workdir: &Path, tag: &str) -> PathBuf {
    let dir = workdir.join(format!("{tag}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("test dir");
    dir
}

/// Bytes that are not text: every byte value, repeated.
fn binary(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(UPLOAD_TEMP_PREFIX))
                .collect()
        })
        .unwrap_or_default()
}

fn xattr(path: &Path, name: &str) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 4096];
    // SAFETY: NUL-terminated strings and a buffer of the given size.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

async fn json_error(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body: Value = res.json().await.expect("JSON error body");
    assert!(ct.starts_with("application/json"), "{ct}");
    assert_eq!(body["code"], status, "{body}");
    (status, body)
}

#[tokio::test]
async fn download_whole_ranges_conditional_and_gzip() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "dl");
    let data = binary(300_000);
    let file = dir.join("data.bin");
    std::fs::write(&file, &data).expect("write");
    let path = file.to_string_lossy().to_string();
    let c = client();

    let res = c
        .get(files_url(url, &[("path", &path)]))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    let h = res.headers().clone();
    assert_eq!(h["content-disposition"], "inline; filename=data.bin");
    assert_eq!(h["vary"], "Accept-Encoding");
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["content-length"], "300000");
    assert_eq!(h["content-type"], "application/octet-stream");
    assert!(h.contains_key("last-modified"));
    assert!(!h.contains_key("content-encoding"));
    assert_eq!(res.bytes().await.expect("body").as_ref(), &data[..]);

    // A relative path resolves against the default user's home (the workdir here).
    let rel = file
        .strip_prefix(workdir)
        .expect("under workdir")
        .to_string_lossy()
        .to_string();
    let res = c
        .get(files_url(url, &[("path", &rel)]))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.expect("body").len(), data.len());

    // One range.
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    assert_eq!(res.headers()["content-range"], "bytes 100-199/300000");
    assert_eq!(res.bytes().await.expect("body").as_ref(), &data[100..200]);
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Range", "bytes=-10")
        .send()
        .await
        .expect("suffix");
    assert_eq!(res.status(), 206);
    assert_eq!(
        res.bytes().await.expect("body").as_ref(),
        &data[data.len() - 10..]
    );
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Range", "bytes=400000-")
        .send()
        .await
        .expect("past the end");
    assert_eq!(res.status(), 416);
    assert_eq!(res.headers()["content-range"], "bytes */300000");

    // Conditional: not modified since its own Last-Modified.
    let last_modified = h["last-modified"].to_str().expect("date").to_string();
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .expect("conditional");
    assert_eq!(res.status(), 304);
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("If-Modified-Since", "Thu, 01 Jan 1998 00:00:00 GMT")
        .send()
        .await
        .expect("conditional");
    assert_eq!(res.status(), 200);

    // gzip when preferred (reqwest here does not decompress: we see the wire).
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Accept-Encoding", "gzip, deflate")
        .send()
        .await
        .expect("gzip");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-encoding"], "gzip");
    assert_eq!(res.headers()["vary"], "Accept-Encoding");
    let body = res.bytes().await.expect("body");
    assert_eq!(gunzip(&body), data);

    // A Range request falls back to identity even when gzip is offered.
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Accept-Encoding", "gzip")
        .header("Range", "bytes=0-9")
        .send()
        .await
        .expect("range+gzip");
    assert_eq!(res.status(), 206);
    assert!(!res.headers().contains_key("content-encoding"));

    // Nothing acceptable.
    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Accept-Encoding", "br, identity;q=0")
        .send()
        .await
        .expect("406");
    let (status, body) = json_error(res).await;
    assert_eq!(status, 406);
    assert_eq!(
        body["message"],
        "error parsing Accept-Encoding: no acceptable encoding found, supported: [gzip]"
    );

    // Text by extension; an empty file.
    std::fs::write(dir.join("notes.txt"), "").expect("write");
    let res = c
        .get(files_url(
            url,
            &[("path", &dir.join("notes.txt").to_string_lossy())],
        ))
        .send()
        .await
        .expect("empty");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert!(res.bytes().await.expect("body").is_empty());
}

/// Identity downloads reuse a few buffers of 1 MB: a file of several (and a range across them)
/// must arrive whole and in order. Every 4-byte word differs, so a chunk out of place shows.
#[tokio::test]
async fn a_download_larger_than_its_buffers_arrives_whole() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "dl-big");
    let data: Vec<u8> = (0..1_700_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let file = dir.join("big.bin");
    std::fs::write(&file, &data).expect("write");
    let path = file.to_string_lossy().to_string();
    let c = client();

    let res = c
        .get(files_url(url, &[("path", &path)]))
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], data.len().to_string());
    let body = res.bytes().await.expect("body");
    assert!(body.as_ref() == &data[..], "the body differs from the file");

    let res = c
        .get(files_url(url, &[("path", &path)]))
        .header("Range", "bytes=1500001-5600000")
        .send()
        .await
        .expect("range");
    assert_eq!(res.status(), 206);
    let body = res.bytes().await.expect("body");
    assert!(
        body.as_ref() == &data[1_500_001..=5_600_000],
        "the range differs from the file"
    );
}

/// A large octet-stream body goes through the preallocated, 64 KB-piece write path; multipart
/// (no preallocation) and gzip (the length is the compressed one) through the others. Each
/// replaces a larger old file, so a stale tail or a size taken from the preallocation would
/// show.
#[tokio::test]
async fn large_uploads_arrive_byte_exact_whatever_the_path() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "up-big");
    let data: Vec<u8> = (0..6_000_001u32).flat_map(|i| i.to_le_bytes()).collect();
    let target = dir.join("big.bin");
    let path = target.to_string_lossy().to_string();
    let old = binary(data.len() + 5_000_000);

    std::fs::write(&target, &old).expect("old");
    let res = upload_octet(url, &[("path", &path)], data.clone(), &[]).await;
    assert_eq!(res.status(), 200);
    assert!(
        std::fs::read(&target).expect("read") == data,
        "octet-stream upload differs"
    );

    std::fs::write(&target, &old).expect("old");
    let res = upload_multipart(url, &[("path", &path)], &[("file", Some("big.bin"), &data)]).await;
    assert_eq!(res.status(), 200);
    assert!(
        std::fs::read(&target).expect("read") == data,
        "multipart upload differs"
    );

    std::fs::write(&target, &old).expect("old");
    let res = upload_octet(
        url,
        &[("path", &path)],
        gzip(&data),
        &[("Content-Encoding", "gzip")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(
        std::fs::read(&target).expect("read") == data,
        "gzip upload differs"
    );
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test]
async fn download_errors_are_envd_json() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "dlerr");
    let c = client();
    let missing = dir.join("missing.txt").to_string_lossy().to_string();
    let res = c
        .get(files_url(url, &[("path", &missing)]))
        .send()
        .await
        .expect("get");
    let (status, body) = json_error(res).await;
    assert_eq!(status, 404);
    assert_eq!(body["message"], format!("path '{missing}' does not exist"));

    let d = dir.to_string_lossy().to_string();
    let res = c
        .get(files_url(url, &[("path", &d)]))
        .send()
        .await
        .expect("get");
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400);
    assert_eq!(body["message"], format!("path '{d}' is a directory"));

    let res = c
        .get(files_url(
            url,
            &[("path", &d), ("username", "no-such-user-kb")],
        ))
        .send()
        .await
        .expect("get");
    let (status, body) = json_error(res).await;
    assert_eq!(status, 401);
    assert_eq!(
        body["message"],
        "error looking up user 'no-such-user-kb': user: unknown user no-such-user-kb"
    );

    let res = c
        .get(files_url(url, &[("path", "~other/x")]))
        .send()
        .await
        .expect("get");
    let (status, _) = json_error(res).await;
    assert_eq!(status, 400);
}

async fn upload_octet(
    url: &str,
    params: &[(&str, &str)],
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(files_url(url, params))
        .header("Content-Type", "application/octet-stream")
        .body(body);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.expect("post")
}

/// A `multipart/form-data` body: (field name, filename, content) per part.
fn multipart(parts: &[(&str, Option<&str>, &[u8])]) -> (String, Vec<u8>) {
    let boundary = format!("kb{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: {disposition}\r\nContent-Type: application/octet-stream\r\n\r\n")
                .into_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend(format!("--{boundary}--\r\n").into_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload_multipart(
    url: &str,
    params: &[(&str, &str)],
    parts: &[(&str, Option<&str>, &[u8])],
) -> reqwest::Response {
    let (content_type, body) = multipart(parts);
    client()
        .post(files_url(url, params))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn upload_multipart_and_octet_stream() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "up");

    // One multipart part with ?path=, into folders that do not exist yet.
    let target = dir.join("a/b/one.bin");
    let data = binary(100_000);
    let res = upload_multipart(
        url,
        &[("path", &target.to_string_lossy())],
        &[("file", Some("ignored-name"), &data)],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!([{"path": target.to_string_lossy(), "name": "one.bin", "type": "file"}])
    );
    assert_eq!(std::fs::read(&target).expect("read"), data);
    assert!(temp_files(target.parent().expect("parent")).is_empty());

    // Several parts, each at its filename (absolute and relative), other parts skipped.
    let rel = format!(
        "{}/two.txt",
        dir.strip_prefix(workdir).expect("under workdir").display()
    );
    let abs = dir.join("three.txt");
    let abs_name = abs.to_string_lossy().to_string();
    let res = upload_multipart(
        url,
        &[],
        &[
            ("comment", None, b"not a file"),
            ("file", Some(&rel), b"two"),
            ("file", Some(&abs_name), b"three"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let paths: Vec<&str> = body
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    let two = workdir.join(&rel);
    assert_eq!(paths, [two.to_string_lossy(), abs.to_string_lossy()]);
    assert_eq!(std::fs::read_to_string(&two).expect("two"), "two");
    assert_eq!(std::fs::read_to_string(&abs).expect("three"), "three");

    // Octet-stream replaces the content, keeps the mode.
    std::fs::set_permissions(&abs, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let res = upload_octet(
        url,
        &[("path", &abs.to_string_lossy())],
        b"replaced".to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(std::fs::read_to_string(&abs).expect("read"), "replaced");
    assert_eq!(
        std::fs::metadata(&abs).expect("stat").mode() & 0o7777,
        0o640
    );

    // gzip body.
    let big = binary(2_000_000);
    let target = dir.join("gz.bin");
    let res = upload_octet(
        url,
        &[("path", &target.to_string_lossy())],
        gzip(&big),
        &[("Content-Encoding", "gzip")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(std::fs::read(&target).expect("read"), big);

    // Through a symlink: the link stays, its file gets the content.
    std::os::unix::fs::symlink("gz.bin", dir.join("link")).expect("symlink");
    let res = upload_octet(
        url,
        &[("path", &dir.join("link").to_string_lossy())],
        b"via link".to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert!(std::fs::symlink_metadata(dir.join("link"))
        .expect("lstat")
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "via link");
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test]
async fn upload_bad_inputs() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "upbad");
    let c = client();
    let target = dir.join("keep.txt");
    std::fs::write(&target, "old content").expect("write");
    let t = target.to_string_lossy().to_string();

    // Two parts for one target: the first is written, then 400.
    let res = upload_multipart(
        url,
        &[],
        &[("file", Some(&t), b"first"), ("file", Some(&t), b"second")],
    )
    .await;
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        format!("you cannot upload multiple files to the same path '{t}' in one upload request, only the first specified file was uploaded")
    );

    // A corrupt gzip body: 400, and the target keeps what it had.
    std::fs::write(&target, "old content").expect("write");
    let mut bad = gzip(&binary(500_000));
    let mid = bad.len() / 2;
    bad[mid..mid + 64].fill(0xAB);
    let res = upload_octet(url, &[("path", &t)], bad, &[("Content-Encoding", "gzip")]).await;
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"]
        .as_str()
        .expect("msg")
        .starts_with("error decompressing request body"));
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "old content"
    );
    assert!(temp_files(&dir).is_empty());

    // Truncated gzip (no trailer).
    let mut cut = gzip(&binary(100_000));
    cut.truncate(cut.len() - 8);
    let res = upload_octet(url, &[("path", &t)], cut, &[("Content-Encoding", "gzip")]).await;
    assert_eq!(json_error(res).await.0, 400);
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "old content"
    );

    // Octet-stream needs ?path=.
    let res = upload_octet(url, &[], b"x".to_vec(), &[]).await;
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "path query parameter is required for raw body upload"
    );

    // Onto a directory.
    let res = upload_octet(url, &[("path", &dir.to_string_lossy())], b"x".to_vec(), &[]).await;
    assert_eq!(json_error(res).await.0, 400);

    // Unknown user, unsupported content type and coding.
    let res = upload_octet(
        url,
        &[("path", &t), ("username", "no-such-user-kb")],
        b"x".to_vec(),
        &[],
    )
    .await;
    assert_eq!(json_error(res).await.0, 401);
    let res = c
        .post(files_url(url, &[("path", &t)]))
        .header("Content-Type", "text/plain")
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(json_error(res).await.0, 400);
    let res = upload_octet(
        url,
        &[("path", &t)],
        b"x".to_vec(),
        &[("Content-Encoding", "br")],
    )
    .await;
    assert_eq!(json_error(res).await.0, 400);
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "old content"
    );
    assert!(temp_files(&dir).is_empty());
}

#[tokio::test]
async fn metadata_becomes_xattrs_and_is_replaced() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "meta");
    let target = dir.join("m.txt");
    let t = target.to_string_lossy().to_string();
    let res = upload_octet(
        url,
        &[("path", &t)],
        b"x".to_vec(),
        &[
            ("X-Metadata-Owner", "bob"),
            ("X-Metadata-Project", "Apollo 11"),
        ],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    assert_eq!(
        body[0]["metadata"],
        serde_json::json!({"owner": "bob", "project": "Apollo 11"})
    );
    assert_eq!(xattr(&target, "user.e2b.owner").as_deref(), Some("bob"));
    assert_eq!(
        xattr(&target, "user.e2b.project").as_deref(),
        Some("Apollo 11")
    );

    // A new upload replaces the set; none clears it.
    let res = upload_octet(
        url,
        &[("path", &t)],
        b"y".to_vec(),
        &[("X-Metadata-Owner", "alice")],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(xattr(&target, "user.e2b.owner").as_deref(), Some("alice"));
    assert_eq!(xattr(&target, "user.e2b.project"), None);
    let res = upload_octet(url, &[("path", &t)], b"z".to_vec(), &[]).await;
    let body: Value = res.json().await.expect("json");
    assert!(body[0].get("metadata").is_none(), "{body}");
    assert_eq!(xattr(&target, "user.e2b.owner"), None);

    // Invalid metadata is refused before anything is written.
    let res = client()
        .post(files_url(url, &[("path", &t)]))
        .header("Content-Type", "application/octet-stream")
        .header(
            "X-Metadata-Bad",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("value"),
        )
        .body("w")
        .send()
        .await
        .expect("post");
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400);
    assert!(body["message"]
        .as_str()
        .expect("msg")
        .starts_with("invalid metadata: "));
    let long = "k".repeat(247);
    let res = upload_octet(
        url,
        &[("path", &t)],
        b"w".to_vec(),
        &[(&format!("X-Metadata-{long}"), "v")],
    )
    .await;
    assert_eq!(json_error(res).await.0, 400);
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "z");
}

#[tokio::test]
async fn username_selects_owner_and_home() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "user");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let nobody = kernelbox::envd::User::lookup("nobody").expect("nobody exists");

    // Owned by the user, and so are the folders created for it.
    let target = dir.join("sub/owned.txt");
    let res = upload_octet(
        url,
        &[("path", &target.to_string_lossy()), ("username", "nobody")],
        b"mine".to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let md = std::fs::metadata(&target).expect("stat");
    assert_eq!((md.uid(), md.gid()), (nobody.uid, nobody.gid));
    let md = std::fs::metadata(dir.join("sub")).expect("stat");
    assert_eq!(md.uid(), nobody.uid);

    // A relative path resolves against that user's home.
    let root = kernelbox::envd::User::lookup("root").expect("root");
    let name = format!("kernelbox-envd-files-{}.txt", uuid::Uuid::new_v4().simple());
    let res = upload_octet(
        url,
        &[("path", &name), ("username", "root")],
        b"in root's home".to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("json");
    let in_home = root.home.join(&name);
    assert_eq!(body[0]["path"], in_home.to_string_lossy().as_ref());
    let res = client()
        .get(files_url(url, &[("path", &name), ("username", "root")]))
        .send()
        .await
        .expect("get");
    assert_eq!(res.text().await.expect("text"), "in root's home");
    let _ = std::fs::remove_file(in_home);
}

#[tokio::test]
async fn signatures_and_tokens() {
    let (url, workdir) = secured_agent();
    let dir = test_dir(workdir, "sig");
    let file = dir.join("s.txt");
    std::fs::write(&file, "secret data").expect("write");
    let p = file.to_string_lossy().to_string();
    let c = client();
    let get = |params: Vec<(&'static str, String)>, token: Option<&'static str>| {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut req = c.get(files_url(url, &params));
        if let Some(t) = token {
            req = req.header("X-Access-Token", t);
        }
        async move { req.send().await.expect("get") }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;

    // Nothing: 401.
    let (status, body) = json_error(get(vec![("path", p.clone())], None).await).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("missing signature query parameter"))
    );
    // The header token.
    assert_eq!(
        get(vec![("path", p.clone())], Some(TOKEN)).await.status(),
        200
    );
    let (status, body) = json_error(get(vec![("path", p.clone())], Some("wrong")).await).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            401,
            Some("access token present in header but does not match")
        )
    );
    // A valid signature, without and with an expiration.
    let sig = sign(&p, Operation::Read, "", TOKEN, None);
    let res = get(vec![("path", p.clone()), ("signature", sig.clone())], None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.expect("text"), "secret data");
    let exp = now + 60;
    let sig_exp = sign(&p, Operation::Read, "", TOKEN, Some(exp));
    let res = get(
        vec![
            ("path", p.clone()),
            ("signature", sig_exp),
            ("signature_expiration", exp.to_string()),
        ],
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    // Signed for a user: the username is part of it.
    let sig_root = sign(&p, Operation::Read, "root", TOKEN, None);
    let res = get(
        vec![
            ("path", p.clone()),
            ("username", "root".into()),
            ("signature", sig_root.clone()),
        ],
        None,
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = get(vec![("path", p.clone()), ("signature", sig_root)], None).await;
    assert_eq!(json_error(res).await.1["message"], "invalid signature");
    // Wrong: another operation, another path, a forged one.
    let write_sig = sign(&p, Operation::Write, "", TOKEN, None);
    let res = get(
        vec![("path", p.clone()), ("signature", write_sig.clone())],
        None,
    )
    .await;
    assert_eq!(json_error(res).await.0, 401);
    let res = get(
        vec![("path", format!("{p}x")), ("signature", sig.clone())],
        None,
    )
    .await;
    assert_eq!(json_error(res).await.0, 401);
    let forged = sign(&p, Operation::Read, "", "not-the-token", None);
    let res = get(vec![("path", p.clone()), ("signature", forged)], None).await;
    assert_eq!(json_error(res).await.0, 401);
    // Expired.
    let past = now - 10;
    let sig_past = sign(&p, Operation::Read, "", TOKEN, Some(past));
    let res = get(
        vec![
            ("path", p.clone()),
            ("signature", sig_past),
            ("signature_expiration", past.to_string()),
        ],
        None,
    )
    .await;
    let (status, body) = json_error(res).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("signature is already expired"))
    );
    // The expiration cannot be stripped from a signature that has one.
    let sig_exp = sign(&p, Operation::Read, "", TOKEN, Some(now + 60));
    let res = get(vec![("path", p.clone()), ("signature", sig_exp)], None).await;
    assert_eq!(json_error(res).await.0, 401);

    // Uploads: a write signature works, a read one does not.
    let target = dir.join("up.txt").to_string_lossy().to_string();
    let sig = sign(&target, Operation::Write, "", TOKEN, None);
    let res = upload_octet(
        url,
        &[("path", &target), ("signature", &sig)],
        b"signed".to_vec(),
        &[],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "signed");
    let sig = sign(&target, Operation::Read, "", TOKEN, None);
    let res = upload_octet(
        url,
        &[("path", &target), ("signature", &sig)],
        b"nope".to_vec(),
        &[],
    )
    .await;
    assert_eq!(json_error(res).await.0, 401);
    let res = upload_octet(
        url,
        &[("path", &target)],
        b"token".to_vec(),
        &[("X-Access-Token", TOKEN)],
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "token");

    // Health stays open.
    assert_eq!(
        c.get(format!("{url}/health"))
            .send()
            .await
            .expect("health")
            .status(),
        204
    );
}

/// Sends the head of a request and `sent` bytes of its body, then closes the connection.
fn cut_off_request(url: &str, head: &str, body: &[u8], sent: usize) {
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&body[..sent]).expect("half the body");
    stream.flush().expect("flush");
    // Let the agent start writing before the client vanishes.
    std::thread::sleep(Duration::from_millis(300));
    drop(stream);
}

/// Waits until `dir` holds no temporary upload file.
fn no_temp_files_left(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = temp_files(dir);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "temporary files left behind: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn an_upload_cut_off_half_way_leaves_the_old_file() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "cut");
    let target = dir.join("precious.bin");
    let old = b"the old content, which must survive".to_vec();
    std::fs::write(&target, &old).expect("write");
    let query = format!("path={}", target.to_string_lossy().replace('/', "%2F"));
    let host = url.trim_start_matches("http://").to_string();

    // Octet-stream: headers and half of a 4 MB body, then the client is gone.
    let body = binary(4_000_000);
    let head = format!(
        "POST /files?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (u, h) = (url.clone(), head.clone());
    tokio::task::spawn_blocking(move || cut_off_request(&u, &h, &body, 2_000_000))
        .await
        .expect("client");
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || no_temp_files_left(&dir2))
        .await
        .expect("wait");
    assert_eq!(
        std::fs::read(&target).expect("read"),
        old,
        "the target was touched"
    );

    // The same for a new file: nothing appears.
    let fresh = dir.join("never.bin");
    let query = format!("path={}", fresh.to_string_lossy().replace('/', "%2F"));
    let body = binary(4_000_000);
    let head = format!(
        "POST /files?{query} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let u = url.clone();
    tokio::task::spawn_blocking(move || cut_off_request(&u, &head, &body, 1_000_000))
        .await
        .expect("client");
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || no_temp_files_left(&dir2))
        .await
        .expect("wait");
    assert!(!fresh.exists(), "a partial file appeared");

    // Multipart, chunked, cut inside the part.
    let boundary = "kernelboxboundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\nContent-Type: application/octet-stream\r\n\r\n",
        target.to_string_lossy()
    )
    .into_bytes();
    body.extend(binary(3_000_000));
    body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let head = format!(
        "POST /files HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let u = url.clone();
    tokio::task::spawn_blocking(move || cut_off_request(&u, &head, &body, 1_500_000))
        .await
        .expect("client");
    let dir2 = dir.clone();
    tokio::task::spawn_blocking(move || no_temp_files_left(&dir2))
        .await
        .expect("wait");
    assert_eq!(
        std::fs::read(&target).expect("read"),
        old,
        "the target was touched"
    );
}

/// A full disk: 507, the old content stays, no temporary file. Needs root for a small tmpfs.
#[tokio::test]
async fn a_full_disk_is_507_and_leaves_the_old_file() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "full");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping the full-disk case: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(dir.clone());
    let target = dir.join("f.bin");
    std::fs::write(&target, b"small and old").expect("write");
    let res = upload_octet(
        url,
        &[("path", &target.to_string_lossy())],
        binary(3_000_000),
        &[],
    )
    .await;
    let (status, body) = json_error(res).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(
        body["message"],
        "attempted to write 3000000 bytes: not enough disk space available"
    );
    assert_eq!(std::fs::read(&target).expect("read"), b"small and old");
    assert!(temp_files(&dir).is_empty());
}

/// An upload refused before its body is read (no token here) still gets its reply to a client
/// that is slow to send the body: the agent takes in up to 256 KB first, as Go's server does.
/// Without that, the connection closed under the client while it was still sending, and the JS
/// SDK reported `EPIPE` instead of the 401's `AuthenticationError`.
#[test]
fn a_refused_upload_is_answered_while_the_body_is_still_coming() {
    let (url, workdir) = secured_agent();
    let target = test_dir(workdir, "refused").join("never.bin");
    let body = vec![b'x'; 128 * 1024];
    let head = format!(
        "POST /files?path={} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        target.display(),
        body.len()
    );
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(head.as_bytes()).expect("head");
    // The reply is ready long before the body: give the agent time to send it (and to close the
    // connection, if it does) before the body goes out in pieces.
    std::thread::sleep(Duration::from_millis(300));
    for piece in body.chunks(16 * 1024) {
        stream
            .write_all(piece)
            .expect("the body is taken in, not refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reply = vec![0u8; 4096];
    let n = stream.read(&mut reply).expect("the reply");
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(!target.exists());
}

/// Reads one HTTP/1.1 response with a `Content-Length` body; `None` if the connection closes
/// first.
fn read_response(stream: &mut std::net::TcpStream) -> Option<String> {
    let (head, body) = try_read_exchange(stream)?;
    Some(format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body)))
}

/// One HTTP/1.1 response with a `Content-Length` body, as (head, body bytes); `None` if the
/// connection closes first.
fn try_read_exchange(stream: &mut std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let len: usize = head
                .to_ascii_lowercase()
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap_or(0));
            if got.len() >= end + 4 + len {
                return Some((head, got[end + 4..end + 4 + len].to_vec()));
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// The JS SDK (undici) sends a chunked multipart body's last, empty chunk in a write of its own.
/// The reply must wait for it: a reply sent at the closing boundary made hyper close the
/// connection with the chunk unread, and a client still writing it (the gateway's HTTP client)
/// got a broken pipe instead of the reply. Probe: the same connection carries a second request.
#[test]
fn a_multipart_uploads_last_chunk_is_read_before_the_reply() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "late-chunk");
    let path = dir.join("late.txt").to_string_lossy().replace('/', "%2F");
    let host = url.trim_start_matches("http://").to_string();
    let (content_type, form) = multipart(&[("file", Some("late.txt"), b"late".as_slice())]);
    let mut stream = std::net::TcpStream::connect(&host).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let head = format!(
        "POST /files?path={path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        form.len()
    );
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(&form).expect("form");
    stream.write_all(b"\r\n").expect("chunk end");
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(b"0\r\n\r\n").expect("last chunk");
    let first = read_response(&mut stream).expect("a reply to the upload");
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    stream
        .write_all(format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .expect("second request");
    let second = read_response(&mut stream).expect("the connection is still open");
    assert!(second.starts_with("HTTP/1.1 204"), "{second}");
    assert_eq!(std::fs::read(dir.join("late.txt")).expect("file"), b"late");
}

/// One HTTP/1.1 response, as (lower-cased head, body bytes); the connection must deliver it.
fn read_exchange(stream: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    let (head, body) = try_read_exchange(stream).expect("a whole response");
    (head.to_ascii_lowercase(), body)
}

/// Identity `/files` transfers are served by the agent itself (splice, sendfile) and everything
/// else by hyper, on one keep-alive connection: uploads, downloads (whole and ranged), then a
/// request only hyper serves (which takes over the connection), then `/files` again.
#[test]
fn one_connection_carries_direct_transfers_then_anything_else() {
    let (url, workdir) = agent();
    let target = test_dir(workdir, "keepalive").join("data.bin");
    let path = target.to_string_lossy().replace('/', "%2F");
    let data = binary(3_000_000);
    let mut stream =
        std::net::TcpStream::connect(url.trim_start_matches("http://")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    for round in 0..2 {
        let head = format!(
            "POST /files?path={path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            data.len()
        );
        stream.write_all(head.as_bytes()).expect("head");
        stream.write_all(&data).expect("body");
        let (head, body) = read_exchange(&mut stream);
        assert!(head.starts_with("http/1.1 200"), "round {round}: {head}");
        let entries: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(entries[0]["path"], target.to_string_lossy().as_ref());

        write!(stream, "GET /files?path={path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("get");
        let (head, body) = read_exchange(&mut stream);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(body == data, "round {round}: the download differs");

        write!(
            stream,
            "GET /files?path={path} HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n"
        )
        .expect("range");
        let (head, body) = read_exchange(&mut stream);
        assert!(head.starts_with("http/1.1 206"), "{head}");
        assert_eq!(body, data[10..20]);
    }
    // A Connect call: hyper's from here on.
    let rpc = br#"{"path":"/"}"#;
    write!(
        stream,
        "POST /filesystem.Filesystem/Stat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        rpc.len()
    )
    .expect("rpc");
    stream.write_all(rpc).expect("rpc body");
    let (head, body) = read_exchange(&mut stream);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("entry"), "{head}");
    write!(stream, "GET /files?path={path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("get");
    let (head, body) = read_exchange(&mut stream);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body == data, "the download through hyper differs");
}

/// A download whose reader stops reading holds up nothing else: other downloads and requests
/// are answered while it is stuck, and dropping it frees the agent.
#[test]
fn a_download_whose_reader_stops_holds_up_nothing_else() {
    let (url, workdir) = agent();
    let dir = test_dir(workdir, "stalled");
    let big = dir.join("big.bin");
    std::fs::write(&big, binary(64 << 20)).expect("write");
    let small = dir.join("small.txt");
    std::fs::write(&small, "small").expect("write");
    let addr = url.trim_start_matches("http://");
    let mut stalled = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stalled,
        "GET /files?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
        big.to_string_lossy().replace('/', "%2F")
    )
    .expect("get");
    let mut first = [0u8; 1024];
    stalled.read_exact(&mut first).expect("the download starts");
    assert!(first.starts_with(b"HTTP/1.1 200"));
    // It reads no more. Meanwhile:
    for _ in 0..3 {
        let mut other = std::net::TcpStream::connect(addr).expect("connect");
        other
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        write!(
            other,
            "GET /files?path={} HTTP/1.1\r\nHost: x\r\n\r\n",
            small.to_string_lossy().replace('/', "%2F")
        )
        .expect("get");
        let (head, body) = read_exchange(&mut other);
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert_eq!(body, b"small");
        write!(other, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n").expect("health");
        let (head, _) = read_exchange(&mut other);
        assert!(head.starts_with("http/1.1 204"), "{head}");
    }
    drop(stalled);
}
