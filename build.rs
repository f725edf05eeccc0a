//! Embeds the provider fixtures (tests/fixtures/providers/<provider>/<kind>.http) so that
//! `switchboard render --provider P --fixture K` and `switchboard providers` work from the
//! binary alone.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/providers");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut entries = Vec::new();
    if let Ok(providers) = std::fs::read_dir(&root) {
        for provider in providers.flatten() {
            println!("cargo:rerun-if-changed={}", provider.path().display());
            let Ok(files) = std::fs::read_dir(provider.path()) else { continue };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "http") {
                    let name = provider.file_name().to_string_lossy().into_owned();
                    let kind = path.file_stem().unwrap().to_string_lossy().into_owned();
                    entries.push((name, kind, path));
                }
            }
        }
    }
    entries.sort();
    let mut out = String::from("pub static FIXTURES: &[(&str, &str, &str)] = &[\n");
    for (provider, kind, path) in entries {
        writeln!(out, "    ({provider:?}, {kind:?}, include_str!({:?})),", path.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").unwrap()).join("fixtures.rs");
    std::fs::write(dest, out).unwrap();
}
