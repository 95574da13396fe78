//! A Tansu broker of a test's own, for tests that stop and restart the broker: SQLite storage
//! in a temporary folder, so topics, records and committed offsets survive the restart.
//!
//! The binary is the one `scripts/test.sh` installs (`tansu` on the `PATH`, or in
//! `~/.cargo/bin`); `CHAINWATCH_TANSU` names another. A missing binary fails the test.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) Tansu on a fixed loopback port.
pub struct Tansu {
    port: u16,
    /// The port clients are told to connect to (a TLS front, say); `port` when `None`.
    advertised: Option<u16>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("CHAINWATCH_TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo = Path::new(&home).join(".cargo/bin/tansu");
    if cargo.exists() {
        return cargo;
    }
    PathBuf::from("tansu")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Tansu {
    /// Starts a broker with SQLite storage and waits until it accepts connections.
    pub fn start() -> Self {
        Self::start_advertising(None)
    }

    /// Starts a broker that tells clients to connect to `advertised` (a proxy in front of it)
    /// rather than to its own port.
    pub fn start_advertising(advertised: Option<u16>) -> Self {
        let mut t = Self {
            port: free_port(),
            advertised,
            dir: tempfile::tempdir().expect("temporary folder"),
            child: None,
        };
        t.restart();
        t
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGKILL: as abrupt as a crash) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the broker again on the same port and storage; waits until it accepts
    /// connections.
    pub fn restart(&mut self) {
        self.stop();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!("tcp://127.0.0.1:{}", self.advertised.unwrap_or(self.port));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("tansu.log"))
            .expect("tansu log");
        let child = Command::new(binary())
            .current_dir(self.dir.path())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                // Relative to the working directory: Tansu joins an absolute path to it.
                "--storage-engine",
                "sqlite://tansu.db",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start tansu ({}): {e}; scripts/test.sh installs it",
                    binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default();
                panic!("tansu exited ({status}): {log}");
            }
            assert!(Instant::now() < deadline, "tansu did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}
