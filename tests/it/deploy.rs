//! What of deploy/ can be checked on this machine: the systemd unit verifies.

use std::process::Command;

use crate::support::process::BIN;

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err()
        && crate::support::skip::unavailable(
            "systemd",
            "systemd-analyze is not installed; the unit cannot be verified",
            "Install Debian's systemd package",
        )
    {
        return;
    }
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/systemd/switchboard.service")).unwrap();
    // Verify against binaries that exist here; the unit itself names the installed paths.
    let kill =
        ["/usr/bin/kill", "/bin/kill"].into_iter().find(|p| std::path::Path::new(p).exists()).unwrap_or("/bin/kill");
    let unit = unit.replace("/usr/local/bin/switchboard", BIN).replace("/bin/kill", kill);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("switchboard.service");
    std::fs::write(&path, unit).unwrap();
    let output = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success() && !said.contains("switchboard.service:"), "{said}");
}

/// The compose file, the Kubernetes manifests and the Dockerfile parse, agree with each
/// other (ports, probes, selectors, grace period over the drain time, non-root), and the
/// configs they ship pass `switchboard check` with this very binary.
#[test]
fn the_container_and_kubernetes_files_validate() {
    let output = Command::new(crate::support::oracle::python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/validate.py"))
        .args(["--binary", BIN])
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{said}");
    assert!(said.contains("checks passed"), "{said}");
}
