//! The real `rollcall` binary as a child process, for the tests that must
//! measure the process itself (its memory, its file) or signal it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;

/// A running `rollcall serve`, stopped (SIGTERM) when dropped.
pub struct Process {
    child: Child,
    pub addr: SocketAddr,
    pub base: String,
    /// Where `/metrics` is served (`--metrics-listen`), as logged.
    pub metrics: Option<SocketAddr>,
    /// Every stderr line so far (JSON logs).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `rollcall serve` on an ephemeral port with the test JWKS and
    /// webhook secret, JSON logs, the database `data`, and `extra` flags.
    pub fn start(dir: &Path, data: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(dir, data, extra, &[])
    }

    /// [`Process::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, JWKS).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rollcall"))
            .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
            .arg("--jwks-file")
            .arg(&jwks)
            .args(["--workos-webhook-secret", WEBHOOK_SECRET, "--data"])
            .arg(data)
            .args(extra)
            .env_remove("ROLLCALL_DATA")
            .env("RUST_LOG", "rollcall=info,warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let started = Instant::now();
        let addr = loop {
            let found = logs.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["fields"]["message"] == "rollcall listening")
                    .then(|| v["fields"]["addr"].as_str()?.parse::<SocketAddr>().ok())
                    .flatten()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "rollcall exited at start ({status}): {:?}",
                    logs.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "rollcall did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // Logged before "rollcall listening", when it is served at all.
        let metrics = logs.lock().unwrap().iter().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "metrics listening")
                .then(|| v["fields"]["addr"].as_str()?.parse::<SocketAddr>().ok())
                .flatten()
        });
        Self {
            child,
            addr,
            base: format!("http://{addr}"),
            metrics,
            logs,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kb(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(field)?
                    .trim_start_matches(':')
                    .trim()
                    .strip_suffix("kB")
            })
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or_else(|| panic!("no {field} in {status}"))
    }

    /// Kills the server with SIGKILL, mid-whatever it was doing.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        self.child.wait().unwrap()
    }
}

impl Process {
    /// Stops the server (SIGTERM) and returns every line it logged.
    pub fn logs_after_stop(self) -> Vec<String> {
        let logs = self.logs.clone();
        assert!(self.stop().success());
        // The reader thread sees the pipe close right after the exit.
        std::thread::sleep(Duration::from_millis(100));
        logs.lock().unwrap().clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
