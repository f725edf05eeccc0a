//! Any main file and tenant file through the real loader: loading never panics, and every
//! error that names a place names one inside the file it blames (line and column exist).
//! The input is the main file, a NUL byte, then the tenant file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0).unwrap_or(data.len());
    let (main, tenant) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let dir = tempfile::tempdir().expect("temp dir");
    let main_path = dir.path().join("switchboard.toml");
    std::fs::write(&main_path, main).expect("write main");
    std::fs::create_dir(dir.path().join("tenants")).expect("tenants dir");
    std::fs::write(dir.path().join("tenants/acme.toml"), tenant).expect("write tenant");
    let env = |name: &str| (name == "SB_TOKEN").then(|| "a-token".to_string());
    let Err(errors) = switchboard::config::load_with_env(&main_path, &env) else { return };
    for error in &errors.0 {
        let Some((line, column)) = error.position else { continue };
        let text = String::from_utf8_lossy(if error.file == main_path { main } else { tenant });
        let lines: Vec<&str> = text.split('\n').collect();
        assert!(line >= 1 && line <= lines.len(), "{error}: line out of range ({} lines)", lines.len());
        let width = lines[line - 1].chars().count();
        assert!(column >= 1 && column <= width + 1, "{error}: column out of range ({width} characters)");
        assert!(error.file == main_path || error.file.starts_with(dir.path()), "{error}: blames {:?}", Path::new(&error.file));
    }
});
