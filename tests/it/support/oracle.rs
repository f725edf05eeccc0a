//! The providers' own libraries, in Python, as independent oracles for signatures. The
//! virtual environment is created on first use (under the target directory) from
//! `tests/oracles/requirements.txt`; `SWITCHBOARD_ORACLE_PYTHON` points at another.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

static PYTHON: Mutex<Option<PathBuf>> = Mutex::new(None);

const ORACLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracles");

pub fn python() -> PathBuf {
    let mut cached = PYTHON.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(path) = cached.as_ref() {
        return path.clone();
    }
    let path = match std::env::var_os("SWITCHBOARD_ORACLE_PYTHON") {
        Some(path) => PathBuf::from(path),
        None => {
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("oracle-venv");
            let python = venv.join("bin/python");
            let ready = venv.join(".ready");
            let wanted = std::fs::read_to_string(format!("{ORACLES}/requirements.txt")).unwrap();
            // The marker holds the requirements it was made from: a change reinstalls.
            if std::fs::read_to_string(&ready).ok().as_deref() != Some(wanted.as_str()) {
                let run = |cmd: &mut Command| {
                    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
                    assert!(status.success(), "{cmd:?} failed: the signature oracles need Python 3 and PyPI");
                };
                run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
                run(Command::new(&python)
                    .args(["-m", "pip", "install", "-q", "-r"])
                    .arg(format!("{ORACLES}/requirements.txt")));
                std::fs::write(&ready, &wanted).unwrap();
            }
            python
        }
    };
    *cached = Some(path.clone());
    path
}

/// Runs one oracle operation (see `tests/oracles/oracle.py`).
pub fn call(request: serde_json::Value) -> serde_json::Value {
    use std::io::Write;
    let mut child = Command::new(python())
        .arg(format!("{ORACLES}/oracle.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the oracle");
    child.stdin.take().unwrap().write_all(request.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "oracle failed on {request}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

pub fn signature(request: serde_json::Value) -> String {
    call(request)["signature"].as_str().unwrap().to_string()
}
