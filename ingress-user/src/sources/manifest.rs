//! Manifest source: every `*.yaml`, `*.yml` and `*.json` file of a directory,
//! multi-document, into [`Resources`]. Kinds the engine does not use are skipped
//! with a debug log. Any document that fails to parse gives a [`ManifestError`] that
//! names the file, the document, the line and the field; nothing is half-applied.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::resources::{Resources, key_of};

/// One bad document: where it is and what is wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: document {document}{}{}: {message}",
    line.map(|l| format!(", line {l}")).unwrap_or_default(),
    field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
pub struct DocumentError {
    pub file: PathBuf,
    /// 1-based index of the document in the file.
    pub document: usize,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// Dotted path of the offending field, where known (`spec.rules[0].matches[0].path.type`).
    pub field: Option<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifests from {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} bad document(s); first: {}", .0.len(), .0[0])]
    Invalid(Vec<DocumentError>),
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// The `.yaml`/`.yml`/`.json` files of `dir`, sorted by name (so later files win on
/// duplicate objects, deterministically).
pub fn manifest_files(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if path.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads every manifest file of `dir`. All-or-nothing: any bad document fails the load.
pub fn load_dir(dir: &Path) -> Result<Resources, ManifestError> {
    let mut res = Resources::default();
    let mut errors = Vec::new();
    for file in manifest_files(dir)? {
        let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Io { path: file.clone(), source })?;
        load_text(&file, &text, &mut res, &mut errors);
    }
    if errors.is_empty() { Ok(res) } else { Err(ManifestError::Invalid(errors)) }
}

/// Splits a YAML stream into documents: (1-based first line, text).
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut cur = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        let marker = line == "---" || line.starts_with("--- ") || line == "...";
        if marker {
            docs.push((start, std::mem::take(&mut cur)));
            start = i + 2;
            // Keep line numbers right: the marker line is replaced by an empty line.
            continue;
        }
        cur.push_str(line);
        cur.push('\n');
    }
    docs.push((start, cur));
    // Drop documents that hold only comments or blank lines.
    docs.into_iter()
        .filter(|(_, d)| d.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')))
        .collect()
}

/// Parses one file's text into `res`; bad documents go to `errors`.
pub fn load_text(file: &Path, text: &str, res: &mut Resources, errors: &mut Vec<DocumentError>) {
    let is_json = file.extension().is_some_and(|e| e == "json");
    let docs = if is_json { vec![(1, text.to_string())] } else { split_documents(text) };
    for (n, (first_line, doc)) in docs.into_iter().enumerate() {
        let ctx = DocCtx { file, document: n + 1, first_line, is_json };
        if let Err(e) = load_document(&ctx, &doc, res) {
            errors.push(e);
        }
    }
}

struct DocCtx<'a> {
    file: &'a Path,
    document: usize,
    first_line: usize,
    is_json: bool,
}

impl DocCtx<'_> {
    fn error(&self, line: Option<usize>, field: Option<String>, message: String) -> DocumentError {
        DocumentError {
            file: self.file.to_path_buf(),
            document: self.document,
            line: line.map(|l| l + self.first_line - 1),
            field,
            message,
        }
    }

    fn parse<T: DeserializeOwned>(&self, doc: &str) -> Result<T, DocumentError> {
        if self.is_json {
            let mut de = serde_json::Deserializer::from_str(doc);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let field = field_of(e.path());
                let inner = e.into_inner();
                self.error(Some(inner.line()), field, strip_location(&inner.to_string()))
            })
        } else {
            let de = serde_yaml::Deserializer::from_str(doc);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let field = field_of(e.path());
                let inner = e.into_inner();
                let line = inner.location().map(|l| l.line());
                self.error(line, field, strip_location(&inner.to_string()))
            })
        }
    }
}

fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let s = path.to_string();
    (s != "." && !s.is_empty()).then_some(s)
}

/// serde_yaml/serde_json append " at line X column Y"; we report the line ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn load_document(ctx: &DocCtx<'_>, doc: &str, res: &mut Resources) -> Result<(), DocumentError> {
    let meta: TypeMeta = ctx.parse(doc)?;
    let group = meta.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (group, meta.kind.as_str()) {
        ("gateway.networking.k8s.io", "Gateway") => {
            let o: gateway_api::apis::standard::gateways::Gateway = ctx.parse(doc)?;
            res.gateways.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            let o: gateway_api::apis::experimental::httproutes::HttpRoute = ctx.parse(doc)?;
            res.http_routes.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            let o: gateway_api::apis::standard::referencegrants::ReferenceGrant = ctx.parse(doc)?;
            res.reference_grants.insert(key_of(&o.metadata), o);
        }
        ("", "Service") => {
            let o: k8s_openapi::api::core::v1::Service = ctx.parse(doc)?;
            res.services.insert(key_of(&o.metadata), o);
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let o: k8s_openapi::api::discovery::v1::EndpointSlice = ctx.parse(doc)?;
            res.endpoint_slices.insert(key_of(&o.metadata), o);
        }
        ("", "Namespace") => {
            let o: k8s_openapi::api::core::v1::Namespace = ctx.parse(doc)?;
            res.namespaces.insert(o.metadata.name.clone().unwrap_or_default(), o);
        }
        ("", "") | (_, "") => {
            return Err(ctx.error(Some(1), Some("kind".into()), "document has no `kind`".into()));
        }
        (_, kind) => {
            tracing::debug!(file = %ctx.file.display(), document = ctx.document, %kind,
                api_version = %meta.api_version, "ignoring a kind the ingress does not use");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> (Resources, Vec<DocumentError>) {
        let mut res = Resources::default();
        let mut errors = Vec::new();
        load_text(Path::new(name), text, &mut res, &mut errors);
        (res, errors)
    }

    const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: r1
  namespace: ns1
spec:
  hostnames: [a.example.com]
  rules:
  - backendRefs:
    - name: svc
      port: 80
";

    #[test]
    fn multi_document_with_comments_and_unknown_kinds() {
        let text = format!(
            "# leading comment\n---\n{ROUTE}---\napiVersion: gateway.kgateway.dev/v1alpha1\nkind: HTTPListenerPolicy\nmetadata: {{name: x}}\n---\n# only a comment\n"
        );
        let (res, errors) = load("a.yaml", &text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(res.http_routes.len(), 1);
        let key = res.http_routes.keys().next().unwrap();
        assert_eq!(key.to_string(), "ns1/r1");
    }

    #[test]
    fn bad_field_names_file_document_line_and_field() {
        let bad = ROUTE.replace("  rules:\n", "  rules:\n  - matches:\n    - path: {type: Prefixx, value: /}\n");
        let text = format!("{ROUTE}---\n{bad}");
        let (res, errors) = load("routes.yaml", &text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        let e = &errors[0];
        assert_eq!(e.document, 2);
        assert_eq!(e.field.as_deref(), Some("spec.rules[0].matches[0].path.type"));
        // the bad line is line 10 of document 2, which starts on line 13 of the file
        assert_eq!(e.line, Some(22), "{e}");
        assert!(e.message.contains("Prefixx"), "{e}");
        let shown = e.to_string();
        assert!(
            shown.starts_with("routes.yaml: document 2, line 22, field `spec.rules[0].matches[0].path.type`"),
            "{shown}"
        );
        // the good document of the same file was still read (the caller decides to keep the old table)
        assert_eq!(res.http_routes.len(), 1);
    }

    #[test]
    fn json_documents() {
        let text = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"n"},
"spec":{"ports":[{"port":"eighty"}]}}"#;
        let (_, errors) = load("s.json", text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("spec.ports[0].port"));
        assert_eq!(errors[0].line, Some(2));
    }

    #[test]
    fn missing_kind_is_an_error() {
        let (_, errors) = load("x.yaml", "apiVersion: v1\nmetadata: {name: a}\n");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("kind"));
    }

    #[test]
    fn loads_the_openchoreo_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openchoreo");
        let res = load_dir(&dir).expect("fixtures load");
        assert_eq!(res.gateways.len(), 2, "{}", res.summary());
        assert!(res.http_routes.len() >= 7, "{}", res.summary());
        assert!(res.endpoint_slices.len() >= 10, "{}", res.summary());
    }
}
