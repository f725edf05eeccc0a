//! A destination's whole request as templates: URL, header values, and a JSON or form body
//! (or the provider's original body, when neither is configured).

use http::{HeaderName, HeaderValue};

use super::{Data, Template};

#[derive(Debug, Clone)]
pub enum BodyTemplate {
    /// Forward the provider's body and content type unchanged.
    Original,
    Json {
        template: Template,
        content_type: HeaderValue,
    },
    Form(Vec<(String, Template)>),
}

#[derive(Debug, Clone)]
pub struct RequestTemplate {
    url: Template,
    headers: Vec<(HeaderName, Template)>,
    body: BodyTemplate,
    /// Whether rendering reads the raw payload, decided once at load: only then does an
    /// attempt parse the stored body again.
    uses_payload: bool,
    /// Whether rendering reads the normalized event: only then does an attempt decode it.
    uses_event: bool,
    /// The URL, parsed once (and as the URI a request carries), when it has no placeholder:
    /// parsing a URL (its host through IDNA) is a good part of building a request.
    static_url: Option<(url::Url, http::Uri)>,
}

/// A rendered request; `body` is `None` for `Original` (the caller has the stored body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub url: String,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<(HeaderValue, String)>,
}

impl RequestTemplate {
    pub fn new(url: Template, headers: Vec<(HeaderName, Template)>, body: BodyTemplate) -> Self {
        let any = |reads: fn(&Template) -> bool| {
            reads(&url)
                || headers.iter().any(|(_, t)| reads(t))
                || match &body {
                    BodyTemplate::Original => false,
                    BodyTemplate::Json { template, .. } => reads(template),
                    BodyTemplate::Form(fields) => fields.iter().any(|(_, t)| reads(t)),
                }
        };
        let (uses_payload, uses_event) = (any(Template::uses_payload), any(Template::uses_event));
        let static_url = url.literal().and_then(|text| {
            let parsed = url::Url::parse(text).ok()?;
            let uri = http::Uri::try_from(parsed.as_str()).ok()?;
            Some((parsed, uri))
        });
        Self { url, headers, body, uses_payload, uses_event, static_url }
    }

    /// The parsed URL of a template without placeholders, and its URI.
    pub fn static_url(&self) -> Option<(&url::Url, &http::Uri)> {
        self.static_url.as_ref().map(|(url, uri)| (url, uri))
    }

    pub fn render(&self, data: &Data) -> Rendered {
        let url = self.url.render_to_string(data);
        let headers = self
            .headers
            .iter()
            .filter_map(|(name, template)| {
                // Header escaping leaves only characters a header value may hold.
                HeaderValue::from_str(&template.render_to_string(data)).ok().map(|v| (name.clone(), v))
            })
            .collect();
        let body = match &self.body {
            BodyTemplate::Original => None,
            BodyTemplate::Json { template, content_type } => {
                Some((content_type.clone(), template.render_to_string(data)))
            }
            BodyTemplate::Form(fields) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                let mut value = String::new();
                for (name, template) in fields {
                    value.clear();
                    template.render(data, &mut value);
                    form.append_pair(name, &value);
                }
                Some((HeaderValue::from_static("application/x-www-form-urlencoded"), form.finish()))
            }
        };
        Rendered { url, headers, body }
    }

    pub fn uses_payload(&self) -> bool {
        self.uses_payload
    }

    pub fn uses_event(&self) -> bool {
        self.uses_event
    }
}
