//! Any text, as any kind of template: compiling never panics, and whatever compiles renders
//! without panicking (a JSON body to valid JSON).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::normalize::{CallEvent, Payload};
use switchboard::template::{Data, Kind, Template};

fuzz_target!(|input: (u8, &str)| {
    let (kind, text) = input;
    let kind = [Kind::Url, Kind::Header, Kind::JsonBody, Kind::FormValue][kind as usize % 4];
    let secrets = |name: &str| (name == "token").then(|| std::sync::Arc::from("s\"e\ncret"));
    if let Ok(template) = Template::compile(text, kind, &secrets) {
        let event = CallEvent { id: Some("a\"b\\c\n<<>>".into()), duration: Some(-3), ..CallEvent::default() };
        let mut payload = Payload::default();
        payload.merge_form(b"a=%22x%22&b=1");
        let out = template.render_to_string(&Data { event: &event, payload: &payload });
        if kind == Kind::JsonBody {
            serde_json::from_str::<serde_json::Value>(&out).expect("a checked JSON template renders JSON");
        }
    }
});
