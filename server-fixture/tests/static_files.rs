//! Static files: `FixtureConfig::static_dir` and the `--static DIR` flag.

mod common;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{WAIT, fixture_with, get, http, quiet_fixture, raw_request, start_binary};
use resub_fixture::FixtureConfig;
use tokio::time::timeout;

const INDEX: &str = "<!doctype html><title>resub</title>";
const SCRIPT: &str = "export const answer = 42;\n";
/// The header of an empty WebAssembly module.
const WASM: &[u8] = b"\0asm\x01\0\0\0";

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("a clock after 1970").as_nanos();
        let path = std::env::temp_dir().join(format!("resub-fixture-static-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create the temporary directory");
        TempDir(path)
    }

    fn write(&self, name: &str, contents: &[u8]) {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create a subdirectory");
        }
        std::fs::write(path, contents).expect("write a file");
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory with a page, its scripts and a WebAssembly module, plus files
/// whose paths are also routes of the fixture.
fn site() -> TempDir {
    let dir = TempDir::new();
    dir.write("index.html", INDEX.as_bytes());
    dir.write("app.js", SCRIPT.as_bytes());
    dir.write("pkg/module.mjs", SCRIPT.as_bytes());
    dir.write("pkg/resub_bg.wasm", WASM);
    dir.write("poll", b"not the poll route");
    dir.write("control/stats", b"not the stats route");
    dir
}

#[tokio::test]
async fn static_dir_serves_files_with_their_content_types() {
    let dir = site();
    let fx = fixture_with(FixtureConfig { static_dir: Some(dir.path().to_owned()), ..FixtureConfig::default() }).await;
    let addr = fx.addr();

    for path in ["/", "/index.html"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("text/html"), "{path}");
        assert_eq!(reply.body, INDEX, "{path}");
    }
    for path in ["/app.js", "/pkg/module.mjs"] {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 200, "{path}");
        assert_eq!(reply.header("content-type"), Some("text/javascript"), "{path}");
        assert_eq!(reply.body, SCRIPT, "{path}");
    }
    let reply = get(addr, "/pkg/resub_bg.wasm").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/wasm"));
    assert_eq!(reply.body.as_bytes(), WASM);

    let head = raw_request(addr, "HEAD", "/app.js", &[], b"").await.expect("a reply");
    let head = String::from_utf8(head).expect("UTF-8 reply").to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("\r\ncontent-type: text/javascript\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "a HEAD answer has no body: {head}");

    assert_eq!(get(addr, "/missing.js").await.status, 404);
    assert_eq!(get(addr, "/../Cargo.toml").await.status, 404);
    assert_eq!(http(addr, "POST", "/app.js", &[], b"").await.status, 405);

    // The fixture's routes take precedence over files of the same path.
    let reply = get(addr, "/poll?channel=c&timeout_ms=0").await;
    assert_eq!((reply.status, reply.header("content-type")), (200, Some("application/json")));
    assert_eq!(reply.json()["frames"][0]["type"], "welcome");
    let reply = get(addr, "/control/stats").await;
    assert_eq!((reply.status, reply.header("content-type")), (200, Some("application/json")));
    assert_eq!(reply.json()["polls_accepted"], 1);
    let reply = http(addr, "POST", "/publish/c", &[], b"x").await;
    assert_eq!(reply.status, 200);
    assert!(reply.json()["id"].is_string());
}

#[tokio::test]
async fn without_static_dir_unknown_paths_are_not_found() {
    let fx = quiet_fixture().await;
    assert_eq!(get(fx.addr(), "/").await.status, 404);
    assert_eq!(get(fx.addr(), "/index.html").await.status, 404);
}

#[tokio::test]
async fn binary_serves_the_static_flag_directory() {
    let dir = site();
    let path = dir.path().to_str().expect("a UTF-8 temp path");
    let (mut child, addr) = start_binary(&["--addr", "127.0.0.1:0", "--static", path]).await;

    let reply = get(addr, "/").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, INDEX));
    let reply = get(addr, "/pkg/resub_bg.wasm").await;
    assert_eq!(reply.header("content-type"), Some("application/wasm"));

    child.start_kill().expect("stop the binary");
    timeout(WAIT, child.wait()).await.expect("the binary exits").expect("wait");

    // A path that is not a directory is refused at startup.
    let missing = dir.path().join("no-such-directory");
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_resub-fixture"))
        .args(["--addr", "127.0.0.1:0", "--static"])
        .arg(&missing)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let status = timeout(WAIT, status).await.expect("the binary exits").expect("wait");
    assert!(!status.success());
}
