//! Manifest source: every `*.yaml`, `*.yml` and `*.json` file of a directory,
//! multi-document, into [`Resources`]. Kinds the engine does not use are skipped
//! with a debug log. Any document that fails to parse gives a [`ManifestError`] that
//! names the file, the document, the line and the field; nothing is half-applied.
//! YAML is read with serde-saphyr: its parser splits the stream into documents and
//! its deserializer gives the line; `serde_path_to_error` gives the field. A syntax
//! error ends the file's reading there (the parser cannot resynchronise), so it is
//! that file's last reported error.
//!
//! Each document is read once into a value (one deserializer instance for every
//! kind) and each object is taken from that value. Only when that fails is the
//! document read again straight into its type through `serde_path_to_error`, which
//! gives the error its line and field (and accepts what the value's stricter types
//! refuse, such as a number where a string is wanted). The straight path per type
//! and format is the larger code: it stays on disk unless a document is bad, so the
//! agent's resident text does not carry it (issue 11).

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError};
use serde_saphyr::{MessageFormatter, UserMessageFormatter};

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
    // Options, so that `kind: ~` is a document without a kind, not a type error.
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
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

/// One document of a YAML stream.
struct Document<'a> {
    /// The document's text, from the start of its first line (its `---`, if any).
    text: &'a str,
    /// 1-based line of the file where `text` starts.
    first_line: usize,
    /// 1-based line of the document's root node (where a missing `kind` is reported).
    root_line: usize,
}

/// Splits a YAML stream into its documents with the YAML parser, so that a `---` in a
/// block scalar is text, not a boundary. Documents without content (only comments,
/// or an empty or `null` one) are left out, as kubectl leaves them out. Returns the
/// documents before a syntax error, and the error.
fn split_documents(text: &str) -> (Vec<Document<'_>>, Option<ScanError>) {
    /// The document being read: where its first line starts, and its root node.
    struct Open {
        start: usize,
        first_line: usize,
        /// The root node's line and whether it is null (an empty document).
        root: Option<(usize, bool)>,
    }
    let mut docs = Vec::new();
    let mut open: Option<Open> = None;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = match ev {
            Ok(ev) => ev,
            Err(e) => return (docs, Some(e)),
        };
        // Parsing from a `&str` always gives byte offsets.
        let byte = |m: &serde_saphyr::granit_parser::Marker| m.byte_offset().unwrap_or(0);
        match ev {
            Event::DocumentStart(..) => {
                // From the start of the line, so an indented root keeps its indentation.
                let start = text[..byte(&span.start)].rfind('\n').map_or(0, |i| i + 1);
                open = Some(Open { start, first_line: span.start.line(), root: None });
            }
            Event::DocumentEnd => {
                if let Some(Open { start, first_line, root: Some((root_line, false)) }) = open.take() {
                    docs.push(Document { text: &text[start..byte(&span.end)], first_line, root_line });
                }
            }
            // Comments are presentation, not content.
            Event::Comment(..) => {}
            ev => {
                if let Some(Open { root: root @ None, .. }) = &mut open {
                    let null = matches!(&ev, Event::Scalar(v, ScalarStyle::Plain, _, None)
                        if matches!(v.as_ref(), "" | "~" | "null" | "Null" | "NULL"));
                    *root = Some((span.start.line(), null));
                }
            }
        }
    }
    (docs, None)
}

/// Parses one file's text into `res`; bad documents go to `errors`.
pub fn load_text(file: &Path, text: &str, res: &mut Resources, errors: &mut Vec<DocumentError>) {
    let mut load = |document, doc: &Document<'_>, format| {
        let ctx = DocCtx { file, document, first_line: doc.first_line, root_line: doc.root_line, format };
        if let Err(e) = load_document(&ctx, doc.text, res) {
            errors.push(e);
        }
    };
    if file.extension().is_some_and(|e| e == "json") {
        load(1, &Document { text, first_line: 1, root_line: 1 }, Format::Json);
        return;
    }
    let (docs, syntax) = split_documents(text);
    for (n, doc) in docs.iter().enumerate() {
        load(n + 1, doc, Format::Yaml);
    }
    if let Some(e) = syntax {
        let ctx = DocCtx { file, document: docs.len() + 1, first_line: 1, root_line: 1, format: Format::Yaml };
        errors.push(ctx.error(Some(e.marker().line()), None, e.info().to_string()));
    }
}

#[derive(Clone, Copy)]
enum Format {
    Yaml,
    Json,
}

struct DocCtx<'a> {
    file: &'a Path,
    document: usize,
    first_line: usize,
    root_line: usize,
    format: Format,
}

impl DocCtx<'_> {
    /// An error at `line` of the document's text (1 = its first line).
    fn error(&self, line: Option<usize>, field: Option<String>, message: String) -> DocumentError {
        DocumentError {
            file: self.file.to_path_buf(),
            document: self.document,
            line: line.map(|l| l + self.first_line - 1),
            field,
            message,
        }
    }

    /// The document as a value, or None when it does not read as one (then the
    /// straight path says what is wrong).
    fn value(&self, doc: &str) -> Option<serde_json::Value> {
        match self.format {
            Format::Json => serde_json::from_str(doc).ok(),
            Format::Yaml => {
                let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
                serde_saphyr::from_str_with_options(doc, options).ok()
            }
        }
    }

    /// `T` from the document's value when it reads as one, else straight from the
    /// document's text (with the error's line and field).
    fn take<T: DeserializeOwned>(&self, value: Option<&serde_json::Value>, doc: &str) -> Result<T, DocumentError> {
        if let Some(t) = value.and_then(|v| T::deserialize(v).ok()) {
            return Ok(t);
        }
        self.parse(doc)
    }

    fn parse<T: DeserializeOwned>(&self, doc: &str) -> Result<T, DocumentError> {
        match self.format {
            Format::Json => {
                let mut de = serde_json::Deserializer::from_str(doc);
                serde_path_to_error::deserialize(&mut de).map_err(|e| {
                    let field = field_of(e.path());
                    let inner = e.into_inner();
                    self.error(Some(inner.line()), field, strip_location(&inner.to_string()))
                })
            }
            Format::Yaml => {
                // YAML 1.2 booleans only (`true`/`false`): `yes` stays an error, as it was.
                let options = serde_saphyr::options! { with_snippet: false, strict_booleans: true };
                let mut field = None;
                serde_saphyr::with_deserializer_from_str_with_options(doc, options, |de| {
                    serde_path_to_error::deserialize(de).map_err(|e| {
                        field = field_of(e.path());
                        e.into_inner()
                    })
                })
                .map_err(|e| {
                    let line = e.location().map(|l| l.line() as usize);
                    let message = Messages { doc }.format_message(&e).into_owned();
                    self.error(line, field, message)
                })
            }
        }
    }
}

/// serde-saphyr's messages for users, with the offending value where the crate's
/// message leaves it out (`invalid i32` -> ``invalid i32: `eighty` ``).
struct Messages<'a> {
    /// The text the error's location points into.
    doc: &'a str,
}

impl MessageFormatter for Messages<'_> {
    fn format_message<'e>(&self, err: &'e serde_saphyr::Error) -> Cow<'e, str> {
        let message = UserMessageFormatter.format_message(err);
        let value = err.location().map(|l| l.span()).and_then(|s| {
            let start = usize::try_from(s.byte_offset()?).ok()?;
            self.doc.get(start..start + usize::try_from(s.byte_len()?).ok()?)
        });
        match (err, value) {
            (serde_saphyr::Error::InvalidScalar { .. }, Some(v)) => Cow::Owned(format!("{message}: `{v}`")),
            // Its text carries lines within the document, not the file: the error's own
            // line (where the alias is used) is the one reported.
            (serde_saphyr::Error::AliasError { msg, .. }, _) => {
                Cow::Owned(format!("{} (through an alias)", strip_location(msg)))
            }
            _ => message,
        }
    }
}

fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let s = path.to_string();
    (s != "." && !s.is_empty()).then_some(s)
}

/// serde_json (and serde-saphyr inside an alias error) append " at line X column Y";
/// we report the line ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn load_document(ctx: &DocCtx<'_>, doc: &str, res: &mut Resources) -> Result<(), DocumentError> {
    let value = ctx.value(doc);
    let value = value.as_ref();
    let meta: TypeMeta = ctx.take(value, doc)?;
    let api_version = meta.api_version.unwrap_or_default();
    let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
    match (group, meta.kind.as_deref().unwrap_or("")) {
        ("gateway.networking.k8s.io", "Gateway") => {
            let o: gateway_api::apis::standard::gateways::Gateway = ctx.take(value, doc)?;
            res.gateways.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "HTTPRoute") => {
            let o: gateway_api::apis::experimental::httproutes::HttpRoute = ctx.take(value, doc)?;
            res.http_routes.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "TLSRoute") => {
            let o = tls_route(ctx, value, doc, &api_version)?;
            res.tls_routes.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "GRPCRoute") => {
            let o: gateway_api::apis::standard::grpcroutes::GrpcRoute = ctx.take(value, doc)?;
            res.grpc_routes.insert(key_of(&o.metadata), o);
        }
        ("gateway.networking.k8s.io", "ReferenceGrant") => {
            let o: gateway_api::apis::standard::referencegrants::ReferenceGrant = ctx.take(value, doc)?;
            res.reference_grants.insert(key_of(&o.metadata), o);
        }
        ("", "Service") => {
            let o: k8s_openapi::api::core::v1::Service = ctx.take(value, doc)?;
            res.services.insert(key_of(&o.metadata), o);
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            let o: k8s_openapi::api::discovery::v1::EndpointSlice = ctx.take(value, doc)?;
            res.endpoint_slices.insert(key_of(&o.metadata), o);
        }
        ("", "Namespace") => {
            let o: k8s_openapi::api::core::v1::Namespace = ctx.take(value, doc)?;
            res.namespaces.insert(o.metadata.name.clone().unwrap_or_default(), o);
        }
        ("", "Secret") => {
            // `data` is base64 (k8s-openapi decodes it); `stringData` is kept as written
            // and read over `data`, as the API server merges it (routing/tls.rs)
            let o: k8s_openapi::api::core::v1::Secret = ctx.take(value, doc)?;
            res.secrets.insert(key_of(&o.metadata), o);
        }
        ("", "") | (_, "") => {
            let root = ctx.root_line + 1 - ctx.first_line;
            return Err(ctx.error(Some(root), Some("kind".into()), "document has no `kind`".into()));
        }
        (_, kind) => {
            tracing::debug!(file = %ctx.file.display(), document = ctx.document, %kind,
                %api_version, "ignoring a kind the ingress does not use");
        }
    }
    Ok(())
}

/// A TLSRoute: `gateway.networking.k8s.io/v1` (the standard channel); v1alpha2 and
/// v1alpha3 documents carry the same fields (hostnames optional) and are read as v1.
fn tls_route(
    ctx: &DocCtx<'_>,
    value: Option<&serde_json::Value>,
    doc: &str,
    api_version: &str,
) -> Result<gateway_api::apis::standard::tlsroutes::TlsRoute, DocumentError> {
    match api_version.rsplit_once('/').map(|(_, v)| v) {
        Some("v1") => ctx.take(value, doc),
        Some("v1alpha2" | "v1alpha3") => {
            let mut v: serde_json::Value = match value {
                Some(v) => v.clone(),
                None => ctx.parse(doc)?,
            };
            if let Some(spec) = v.get_mut("spec").and_then(|s| s.as_object_mut()) {
                spec.entry("hostnames").or_insert_with(|| serde_json::json!([]));
            }
            v["apiVersion"] = "gateway.networking.k8s.io/v1".into();
            serde_path_to_error::deserialize(v)
                .map_err(|e| ctx.error(None, field_of(e.path()), strip_location(&e.into_inner().to_string())))
        }
        _ => Err(ctx.error(
            None,
            Some("apiVersion".into()),
            format!(
                "TLSRoute {api_version} is not supported: use gateway.networking.k8s.io/v1 (v1alpha2 and v1alpha3 are read as v1)"
            ),
        )),
    }
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

    const GRPC_ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: g1
  namespace: ns1
spec:
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {service: pkg.Svc, method: Get}
    backendRefs:
    - name: svc
      port: 50051
";

    #[test]
    fn grpc_routes_load_and_a_bad_one_is_located() {
        let (res, errors) = load("grpc.yaml", GRPC_ROUTE);
        assert!(errors.is_empty(), "{errors:?}");
        let (key, r) = res.grpc_routes.iter().next().expect("a GRPCRoute");
        assert_eq!(key.to_string(), "ns1/g1");
        let m = r.spec.rules.as_ref().unwrap()[0].matches.as_ref().unwrap()[0].method.as_ref().unwrap();
        assert_eq!((m.service.as_deref(), m.method.as_deref()), (Some("pkg.Svc"), Some("Get")));
        assert!(res.http_routes.is_empty(), "a GRPCRoute is not an HTTPRoute");
        // a method match type the API does not have: file, document, line, field
        let bad = GRPC_ROUTE.replace("{service: pkg.Svc, method: Get}", "{type: Prefix, service: pkg.Svc}");
        let (res, errors) = load("grpc.yaml", &format!("{GRPC_ROUTE}---\n{bad}"));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let shown = errors[0].to_string();
        assert!(
            shown.starts_with("grpc.yaml: document 2, line 24, field `spec.rules[0].matches[0].method.type`"),
            "{shown}"
        );
        assert!(shown.contains("Prefix"), "{shown}");
        assert_eq!(res.grpc_routes.len(), 1, "the good document was read");
    }

    /// The whole message, as `/readyz` and the log show it: file, document (counting
    /// only documents with content), line in the file, field path, then what is wrong.
    #[test]
    fn the_error_format_is_file_document_line_field_message() {
        let text = "# a comment, not a document\n---\n# only a comment\n---\n\
apiVersion: v1\nkind: ConfigMap\ndata:\n  script: |\n    ---\n    not a boundary\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{port: eighty}]\n";
        let (_, errors) = load("bad.yaml", text);
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["bad.yaml: document 2, line 16, field `spec.ports[0].port`: invalid i32: `eighty`"]);
    }

    #[test]
    fn a_syntax_error_is_located_and_ends_the_file() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\n---\n\
apiVersion: v1\nkind: Service\nmetadata: {name: t\nspec: {}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: u}\n";
        let (res, errors) = load("syntax.yaml", text);
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            ["syntax.yaml: document 2, line 8: while parsing a flow mapping, did not find expected ',' or '}'"]
        );
        assert_eq!(res.services.len(), 1, "the document before the error was read");
    }

    #[test]
    fn a_document_may_start_on_its_marker_line_or_be_indented() {
        let text = "--- {apiVersion: v1, kind: Service, metadata: {name: a},\n  spec: {ports: [{port: 80}]}}\n\
---\n  apiVersion: v1\n  kind: Service\n  metadata: {name: b}\n  spec:\n    ports: [{port: x}]\n";
        let (res, errors) = load("shapes.yaml", text);
        assert_eq!(res.services.len(), 1, "{errors:?}");
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["shapes.yaml: document 2, line 8, field `spec.ports[0].port`: invalid i32: `x`"]);
    }

    #[test]
    fn an_error_through_an_alias_names_the_line_of_its_use() {
        let text = format!(
            "{ROUTE}---\napiVersion: v1\nkind: Service\nmetadata: &m {{name: s}}\nspec:\n  ports: [{{port: *m}}]\n"
        );
        let (_, errors) = load("alias.yaml", &text);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!((errors[0].document, errors[0].line), (2, Some(17)), "{}", errors[0]);
        assert!(
            errors[0].message.ends_with("(through an alias)") && !errors[0].message.contains("line"),
            "{}",
            errors[0]
        );
    }

    /// kubectl rejects a key given twice; so does the manifest source (the YAML crate's
    /// default), rather than let one of the two values win silently.
    #[test]
    fn a_duplicate_key_is_an_error() {
        let (res, errors) = load("dup.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: s, name: t}\n");
        assert!(res.services.is_empty());
        let shown: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            ["dup.yaml: document 1, line 3, field `metadata.?`: duplicate mapping key: name not allowed here"]
        );
    }

    #[test]
    fn only_true_and_false_are_booleans() {
        let (_, errors) = load(
            "b.yaml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  publishNotReadyAddresses: yes\n",
        );
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("spec.publishNotReadyAddresses"));
        assert_eq!(errors[0].line, Some(5));
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
        // a null kind is a missing one; the line is the document's first line of content
        let (_, errors) = load("x.yaml", "# c\n---\n\napiVersion: v1\nkind: ~\n");
        assert_eq!(errors.len(), 1);
        assert_eq!((errors[0].field.as_deref(), errors[0].line), (Some("kind"), Some(4)), "{}", errors[0]);
    }

    #[test]
    fn secrets_with_base64_data_and_string_data() {
        let text = "apiVersion: v1\nkind: Secret\nmetadata: {name: c, namespace: ns1}\ntype: kubernetes.io/tls\n\
data:\n  tls.crt: aGVsbG8=\nstringData:\n  tls.key: world\n";
        let (res, errors) = load("s.yaml", text);
        assert!(errors.is_empty(), "{errors:?}");
        let s = &res.secrets[&crate::resources::ObjectKey::new("ns1", "c")];
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(s.data.as_ref().unwrap()["tls.crt"].0, b"hello");
        assert_eq!(s.string_data.as_ref().unwrap()["tls.key"], "world");
    }

    #[test]
    fn a_secret_with_bad_base64_names_file_line_and_field() {
        let text =
            format!("{ROUTE}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: c}}\ndata:\n  tls.crt: not*base64\n");
        let (res, errors) = load("certs.yaml", &text);
        assert!(res.secrets.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        let shown = errors[0].to_string();
        assert!(shown.starts_with("certs.yaml: document 2, line 17, field `data.tls.crt`"), "{shown}");
    }

    #[test]
    fn loads_the_openchoreo_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openchoreo");
        let res = load_dir(&dir).expect("fixtures load");
        assert_eq!(res.gateways.len(), 2, "{}", res.summary());
        assert!(res.http_routes.len() >= 7, "{}", res.summary());
        assert!(res.endpoint_slices.len() >= 10, "{}", res.summary());
    }

    #[test]
    fn tls_routes_are_read_as_v1_and_old_versions_without_hostnames_too() {
        let v1 = "apiVersion: gateway.networking.k8s.io/v1\nkind: TLSRoute\nmetadata: {name: t1, namespace: ns1}\nspec:\n  parentRefs: [{name: gw, sectionName: tls}]\n  hostnames: [a.example.com]\n  rules: [{backendRefs: [{name: svc, port: 443}]}]\n";
        let alpha = "---\napiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TLSRoute\nmetadata: {name: t2, namespace: ns1}\nspec:\n  parentRefs: [{name: gw}]\n  rules: [{backendRefs: [{name: svc, port: 443, weight: 3}]}]\n";
        let (res, errors) = load("t.yaml", &format!("{v1}{alpha}"));
        assert!(errors.is_empty(), "{errors:?}");
        let t1 = &res.tls_routes[&crate::resources::ObjectKey::new("ns1", "t1")];
        assert_eq!(t1.spec.hostnames, ["a.example.com"]);
        assert_eq!(t1.spec.parent_refs.as_ref().unwrap()[0].section_name.as_deref(), Some("tls"));
        let t2 = &res.tls_routes[&crate::resources::ObjectKey::new("ns1", "t2")];
        assert!(t2.spec.hostnames.is_empty());
        assert_eq!(t2.spec.rules[0].backend_refs[0].weight, Some(3));
        let (_, errors) = load("t.yaml", &v1.replace("/v1\n", "/v9\n"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field.as_deref(), Some("apiVersion"), "{}", errors[0]);
        assert!(errors[0].message.contains("use gateway.networking.k8s.io/v1"), "{}", errors[0]);
        let (_, errors) = load("t.yaml", &v1.replace("port: 443", "port: https"));
        assert_eq!(errors.len(), 1, "a bad field is an error with its path: {errors:?}");
        assert!(errors[0].field.as_deref().is_some_and(|f| f.contains("backendRefs")), "{}", errors[0]);
    }
}
