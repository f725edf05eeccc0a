//! `switchboard providers`: every profile, what it normalizes, how it signs and what it
//! expects back; with a name, that provider's embedded callbacks.

use std::process::ExitCode;

use switchboard::config::Provider;
use switchboard::normalize::fixture::{self, Fixture};
use switchboard::normalize::profile::{self, Profile};

pub fn print(name: Option<&str>) -> ExitCode {
    match name {
        None => {
            println!("{:<11} {:<11} {:<38} {:>8}  sends", "provider", "signature", "answer", "deadline");
            for provider in Provider::ALL {
                let p = profile::of(provider);
                let deadline = p.answer.deadline.map_or("-".to_string(), |d| format!("{}s", d.as_secs()));
                println!(
                    "{:<11} {:<11} {:<38} {:>8}  {}",
                    provider.name(),
                    p.signature.scheme().unwrap_or("none"),
                    p.answer.format,
                    deadline,
                    p.sends
                );
            }
            println!("\n`switchboard providers <name>` lists a provider's callbacks; render one with");
            println!("`switchboard render --tenant T --destination D --provider <name> --fixture <kind>`.");
            ExitCode::SUCCESS
        }
        Some(name) => match parse(name) {
            Ok(provider) => {
                describe(&profile::of(provider));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("switchboard: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn describe(p: &Profile) {
    println!("{} ({})", p.title, p.provider.name());
    println!("  sends:     {}", p.sends);
    match p.signature.scheme() {
        Some(scheme) => println!("  signature: {scheme}  (auth = [{{ scheme = \"provider\", … }}])"),
        None => println!("  signature: none; use token, basic or ip_allow"),
    }
    match p.answer.deadline {
        Some(d) => println!("  answer:    {}, within {}s", p.answer.format, d.as_secs()),
        None => println!("  answer:    {} (no documented deadline)", p.answer.format),
    }
    println!("  responder: respond_timeout defaults to {}ms", p.respond_timeout().as_millis());
    if let Some(field) = p.sequence {
        println!("  sequence:  {field} (order_by = \"provider_sequence\" needs no `sequence`)");
    }
    let fixtures = fixture::of(p.provider);
    if !fixtures.is_empty() {
        println!("  callbacks (--fixture):");
        for f in &fixtures {
            println!("    {:<22} {} {}", f.kind, f.method, f.notes.first().copied().unwrap_or(""));
        }
    }
}

fn parse(name: &str) -> Result<Provider, String> {
    Provider::parse(name).ok_or_else(|| {
        format!("no provider {name:?}; expected one of {}", Provider::ALL.map(Provider::name).join(", "))
    })
}

/// One provider's embedded callback, for `render --provider P --fixture K`.
pub fn fixture(provider: &str, kind: &str) -> Result<Fixture, String> {
    fixture::find(parse(provider)?, kind)
}
