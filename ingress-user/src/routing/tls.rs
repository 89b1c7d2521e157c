//! HTTPS listeners (`tls.mode: Terminate`): per listen mapping, the certificate of each
//! served HTTPS listener, built from the `kubernetes.io/tls` Secrets its
//! `certificateRefs` name, and the choice of listener by the ClientHello's SNI (an exact
//! hostname, then the longest wildcard, then the listener without hostname). Pure: the
//! proxy reads the current table's [`TlsListeners`] at each handshake.
//!
//! A listener whose certificate cannot be used (Secret missing, wrong type, PEM that
//! does not parse, a key that is not the certificate's) keeps its place in the SNI
//! choice with the problem instead of a certificate: a client asking for its hostname is
//! refused, it never gets another listener's certificate. Every other listener serves.

use std::collections::HashMap;
use std::sync::Arc;

use gateway_api::apis::standard::gateways::{GatewayListeners, GatewayListenersTlsMode};
use k8s_openapi::api::core::v1::Secret;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::Hostname;
use super::refs::reference_granted_to;
use super::status::{Problem, Reason};
use crate::resources::{ObjectKey, Resources};

/// The Secret type a certificateRef must name.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The crypto provider every certificate key is loaded with (and the proxy's TLS uses).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One served HTTPS listener and its certificate, or why it has none.
#[derive(Debug)]
pub struct TlsListener {
    pub name: String,
    pub port: u16,
    /// None: any SNI (and clients that send none).
    pub hostname: Option<Hostname>,
    /// `namespace/name` of each certificateRef, as resolved.
    pub secrets: Vec<String>,
    pub certificate: Result<Arc<CertifiedKey>, CertProblem>,
}

/// Why an HTTPS listener has no usable certificate: the listener's `ResolvedRefs=False`
/// reason (`InvalidCertificateRef`, `RefNotPermitted`) and what exactly is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertProblem {
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for CertProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

fn cert_problem(p: Problem) -> CertProblem {
    CertProblem { reason: p.reason.as_str(), message: p.message }
}

/// The HTTPS listeners of one listen mapping, indexed by hostname.
#[derive(Debug, Default)]
pub struct TlsListeners {
    /// In Gateway order.
    pub listeners: Vec<TlsListener>,
    exact: HashMap<String, usize>,
    /// Wildcard suffixes (`.example.com`), longest first.
    wildcards: Vec<(String, usize)>,
    any: Option<usize>,
}

/// The outcome of choosing a listener for a ClientHello.
#[derive(Debug)]
pub enum Selected<'a> {
    /// Serve this certificate.
    Serve(&'a TlsListener, &'a Arc<CertifiedKey>),
    /// The SNI selects a listener whose certificate is unusable: refuse the handshake.
    Invalid(&'a TlsListener, &'a CertProblem),
    /// No listener serves this name (or no name was sent and every listener has one).
    NoMatch,
}

impl TlsListeners {
    /// The listener for a ClientHello's server name: the exact hostname, then the
    /// longest matching wildcard, then the listener without hostname.
    pub fn select(&self, sni: Option<&str>) -> Selected<'_> {
        let index = match sni.map(normalize_sni) {
            Some(name) => self.exact.get(&name).copied().or_else(|| {
                self.wildcards
                    .iter()
                    .find(|(suffix, _)| name.len() > suffix.len() && name.ends_with(suffix.as_str()))
                    .map(|(_, i)| *i)
                    .or(self.any)
            }),
            None => self.any,
        };
        let Some(l) = index.map(|i| &self.listeners[i]) else { return Selected::NoMatch };
        match &l.certificate {
            Ok(k) => Selected::Serve(l, k),
            Err(p) => Selected::Invalid(l, p),
        }
    }

    /// The listener named `name`, if this mapping serves it over TLS.
    pub fn listener(&self, name: &str) -> Option<&TlsListener> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Lowercase, without a trailing dot.
fn normalize_sni(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

/// The served HTTPS listeners of a Gateway in `gw_ns`, with their certificates. The
/// returned problems (one per listener that cannot serve, or that another listener of
/// the same hostname shadows) are for the mapping's problem list.
pub(super) fn build(res: &Resources, gw_ns: &str, listeners: &[&GatewayListeners]) -> (TlsListeners, Vec<String>) {
    let provider = provider();
    let mut out = TlsListeners::default();
    let mut problems = Vec::new();
    for l in listeners {
        let hostname = l.hostname.as_deref().map(Hostname::parse);
        let (secrets, certificate) = listener_certificate(res, gw_ns, l, &provider);
        if let Err(p) = &certificate {
            problems.push(format!("HTTPS listener {}: {p}; it refuses TLS handshakes, the others serve", l.name));
        }
        let i = out.listeners.len();
        let taken = match &hostname {
            Some(Hostname::Exact(h)) => out.exact.contains_key(h) || out.exact.insert(h.clone(), i).is_some(),
            Some(Hostname::Wildcard(s)) => {
                out.wildcards.iter().any(|(x, _)| x == s) || {
                    out.wildcards.push((s.clone(), i));
                    false
                }
            }
            None => out.any.is_some() || out.any.replace(i).is_some(),
        };
        if taken {
            // the first listener of a hostname (Gateway order) is the one chosen
            problems.push(format!(
                "HTTPS listener {} has the hostname of an earlier HTTPS listener ({}): HostnameConflict, its certificate is never chosen",
                l.name,
                hostname.as_ref().map(|h| h.to_string()).unwrap_or_else(|| "none".into())
            ));
        }
        out.listeners.push(TlsListener { name: l.name.clone(), port: l.port as u16, hostname, secrets, certificate });
    }
    out.wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    (out, problems)
}

/// Settles the protocol of a mapping among its HTTP and HTTPS listeners (`served`, in
/// Gateway order), dropping those it does not serve (with a problem each). Returns
/// whether the mapping is TLS.
///
/// - An HTTPS listener with `tls.mode: Passthrough` is invalid (passthrough is
///   `protocol: TLS`): not served.
/// - HTTP and HTTPS on the same port: ProtocolConflict; the HTTPS listeners win (the
///   whole mapping is TLS), the HTTP ones are not served.
/// - HTTP and HTTPS on different ports under a mapping that names no port: the HTTP
///   listeners are served (as before HTTPS was); the HTTPS ones need a mapping of their
///   own (`ADDR=NS/GATEWAY:PORT`).
pub(super) fn choose_protocol(
    served: &mut Vec<&GatewayListeners>,
    mapped_port: Option<u16>,
    problems: &mut Vec<String>,
) -> bool {
    served.retain(|l| {
        let ok = l.protocol != "HTTPS" || terminates(l);
        if !ok {
            problems.push(format!(
                "listener {} (HTTPS port {}) is not served: tls.mode Passthrough needs protocol TLS",
                l.name, l.port
            ));
        }
        ok
    });
    let https_ports: Vec<i32> = served.iter().filter(|l| l.protocol == "HTTPS").map(|l| l.port).collect();
    if https_ports.is_empty() {
        return false;
    }
    served.retain(|l| {
        let conflict = l.protocol == "HTTP" && https_ports.contains(&l.port);
        if conflict {
            problems.push(format!(
                "listener {} (HTTP port {}) is not served: ProtocolConflict with an HTTPS listener on the same port",
                l.name, l.port
            ));
        }
        !conflict
    });
    if served.iter().all(|l| l.protocol == "HTTPS") {
        return true;
    }
    debug_assert!(mapped_port.is_none(), "one port, both protocols: resolved above");
    served.retain(|l| {
        let plain = l.protocol == "HTTP";
        if !plain {
            problems.push(format!(
                "listener {} (HTTPS port {}) is not served by this mapping: serve it on an address of its own, ADDR=NAMESPACE/GATEWAY:{}",
                l.name, l.port, l.port
            ));
        }
        plain
    });
    false
}

/// The Secrets a listener's certificateRefs may name: core Secrets, in another
/// namespace only with a ReferenceGrant.
pub fn permitted_refs(res: &Resources, gw_ns: &str, l: &GatewayListeners) -> Vec<ObjectKey> {
    let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_deref()).unwrap_or(&[]);
    refs.iter()
        .filter(|r| {
            let group = r.group.as_deref().unwrap_or("");
            (group.is_empty() || group == "core") && r.kind.as_deref().unwrap_or("Secret") == "Secret"
        })
        .map(|r| ObjectKey::new(r.namespace.as_deref().unwrap_or(gw_ns), &r.name))
        .filter(|k| {
            k.namespace == gw_ns
                || reference_granted_to(res, ("Gateway", gw_ns), ("Secret", k.namespace.as_str(), k.name.as_str()))
        })
        .collect()
}

/// Whether an HTTPS listener's `tls.mode` is Terminate (the default): a Passthrough
/// HTTPS listener is invalid (passthrough is `protocol: TLS`).
pub(super) fn terminates(l: &GatewayListeners) -> bool {
    let mode = l.tls.as_ref().and_then(|t| t.mode.as_ref());
    !matches!(mode, Some(GatewayListenersTlsMode::Passthrough))
}

/// The listener's certificate from its certificateRefs (every ref must resolve; the
/// first is served), and the refs as `namespace/name`.
fn listener_certificate(
    res: &Resources,
    gw_ns: &str,
    l: &GatewayListeners,
    provider: &CryptoProvider,
) -> (Vec<String>, Result<Arc<CertifiedKey>, CertProblem>) {
    let refs = l.tls.as_ref().and_then(|t| t.certificate_refs.as_deref()).unwrap_or(&[]);
    let secrets: Vec<String> =
        refs.iter().map(|r| format!("{}/{}", r.namespace.as_deref().unwrap_or(gw_ns), r.name)).collect();
    if refs.is_empty() {
        let p = Problem::new(Reason::InvalidCertificateRef, "tls.certificateRefs is empty: nothing to serve");
        return (secrets, Err(cert_problem(p)));
    }
    let mut first = None;
    for r in refs {
        let group = r.group.as_deref().unwrap_or("");
        let kind = r.kind.as_deref().unwrap_or("Secret");
        let ns = r.namespace.as_deref().unwrap_or(gw_ns);
        let at = format!("certificateRef {ns}/{}", r.name);
        if !(group.is_empty() || group == "core") || kind != "Secret" {
            let p = Problem::new(Reason::InvalidCertificateRef, format!("{at}: {group}/{kind} is not a core Secret"));
            return (secrets, Err(cert_problem(p)));
        }
        if ns != gw_ns && !reference_granted_to(res, ("Gateway", gw_ns), ("Secret", ns, r.name.as_str())) {
            let why = format!("{at}: no ReferenceGrant in {ns} allows Gateways from {gw_ns} to use it");
            return (secrets, Err(cert_problem(Problem::new(Reason::RefNotPermitted, why))));
        }
        let Some(secret) = res.secrets.get(&ObjectKey::new(ns, &r.name)) else {
            let p = Problem::new(Reason::InvalidCertificateRef, format!("{at}: Secret not found"));
            return (secrets, Err(cert_problem(p)));
        };
        match certified_key(secret, provider) {
            Ok(k) => {
                first.get_or_insert(k);
            }
            Err(e) => {
                let p = Problem::new(Reason::InvalidCertificateRef, format!("{at}: {e}"));
                return (secrets, Err(cert_problem(p)));
            }
        }
    }
    (secrets, Ok(first.expect("at least one ref resolved")))
}

/// A value of a Secret: `stringData` (as the API server merges it) over `data`.
fn secret_value<'s>(s: &'s Secret, key: &str) -> Option<&'s [u8]> {
    if let Some(v) = s.string_data.as_ref().and_then(|d| d.get(key)) {
        return Some(v.as_bytes());
    }
    s.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.as_slice())
}

/// The chain and key of a `kubernetes.io/tls` Secret, checked against each other.
pub fn certified_key(secret: &Secret, provider: &CryptoProvider) -> Result<Arc<CertifiedKey>, String> {
    let ty = secret.type_.as_deref().unwrap_or("Opaque");
    if ty != TLS_SECRET_TYPE {
        return Err(format!("Secret type is {ty}, not {TLS_SECRET_TYPE}"));
    }
    let crt = secret_value(secret, "tls.crt").ok_or("the Secret has no tls.crt")?;
    let key = secret_value(secret, "tls.key").ok_or("the Secret has no tls.key")?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.crt is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM CERTIFICATE block".into());
    }
    let key =
        PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls.key holds no usable PEM private key: {e}"))?;
    let ck = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "tls.key is not the key of the certificate in tls.crt".to_string(),
        e => format!("tls.crt/tls.key cannot be used: {e}"),
    })?;
    Ok(Arc::new(ck))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenMapping;
    use crate::routing::compile;
    use crate::routing::tests::resources;

    /// A self-signed certificate for `names` and its key, as PEM.
    fn cert(names: &[&str]) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn indent(s: &str) -> String {
        s.lines().map(|l| format!("      {l}\n")).collect()
    }

    /// A `kubernetes.io/tls` Secret with the given PEM (as stringData).
    fn secret(ns: &str, name: &str, ty: &str, crt: &str, key: &str) -> String {
        format!(
            "\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: {ns}}}\ntype: {ty}\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
            indent(crt),
            indent(key)
        )
    }

    fn tls_secret(ns: &str, name: &str, names: &[&str]) -> String {
        let (c, k) = cert(names);
        secret(ns, name, TLS_SECRET_TYPE, &c, &k)
    }

    /// A Gateway in `infra` with the given listeners (YAML flow mappings).
    fn gateway(listeners: &[&str]) -> String {
        let ls: String = listeners.iter().map(|l| format!("  - {l}\n")).collect();
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: infra}}\nspec:\n  gatewayClassName: x\n  listeners:\n{ls}"
        )
    }

    fn https(name: &str, host: Option<&str>, secret: &str) -> String {
        let host = host.map(|h| format!(", hostname: '{h}'")).unwrap_or_default();
        format!(
            "{{name: {name}, protocol: HTTPS, port: 443{host}, tls: {{mode: Terminate, certificateRefs: [{{name: {secret}}}]}}}}"
        )
    }

    fn table_of(yaml: &str, listen: &str) -> crate::routing::Table {
        let m: ListenMapping = listen.parse().unwrap();
        compile(&resources(yaml), &[m])
    }

    /// The DNS SAN of the served certificate (the test certificates have one each).
    fn served_san(t: &TlsListeners, sni: Option<&str>) -> Option<String> {
        match t.select(sni) {
            Selected::Serve(_, k) => Some(first_dns_san(k.end_entity_cert().unwrap().as_ref())),
            _ => None,
        }
    }

    /// The listener chosen for `sni` by name, or `-` (no match) / `!name` (invalid).
    fn chosen(t: &TlsListeners, sni: Option<&str>) -> String {
        match t.select(sni) {
            Selected::Serve(l, _) => l.name.clone(),
            Selected::Invalid(l, _) => format!("!{}", l.name),
            Selected::NoMatch => "-".into(),
        }
    }

    /// The first DNS name of a DER certificate's SAN extension (OID 2.5.29.17, whose
    /// entries are `[2] IA5String`): enough for rcgen's certificates.
    fn first_dns_san(der: &[u8]) -> String {
        let oid = [0x06, 0x03, 0x55, 0x1d, 0x11];
        let at = der.windows(oid.len()).position(|w| w == oid).expect("a SAN extension");
        let rest = &der[at..];
        let p = rest.iter().position(|b| *b == 0x82).expect("a dNSName");
        let len = rest[p + 1] as usize;
        String::from_utf8(rest[p + 2..p + 2 + len].to_vec()).unwrap()
    }

    /// Spec (GatewayListeners.hostname; Gateway API GEP-2162 SNI): the exact hostname,
    /// then the longest wildcard, then the listener without hostname.
    #[test]
    fn sni_selects_exact_then_longest_wildcard_then_no_hostname() {
        let yaml = gateway(&[
            &https("any", None, "c-any"),
            &https("wild", Some("*.example.com"), "c-wild"),
            &https("deep", Some("*.b.example.com"), "c-deep"),
            &https("exact", Some("a.b.example.com"), "c-exact"),
        ]) + &tls_secret("infra", "c-any", &["any.test"])
            + &tls_secret("infra", "c-wild", &["*.example.com"])
            + &tls_secret("infra", "c-deep", &["*.b.example.com"])
            + &tls_secret("infra", "c-exact", &["a.b.example.com"]);
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        let lt = &t.listeners[0];
        assert!(lt.problems.is_empty(), "{:?}", lt.problems);
        let tls = lt.tls.as_ref().expect("an HTTPS mapping");
        assert_eq!(chosen(tls, Some("a.b.example.com")), "exact");
        assert_eq!(chosen(tls, Some("A.B.Example.COM.")), "exact", "case and a trailing dot do not matter");
        assert_eq!(chosen(tls, Some("x.b.example.com")), "deep", "the longest wildcard");
        assert_eq!(chosen(tls, Some("x.y.b.example.com")), "deep", "a wildcard matches several labels");
        assert_eq!(chosen(tls, Some("x.example.com")), "wild");
        assert_eq!(chosen(tls, Some("example.com")), "any", "a wildcard needs a label before its suffix");
        assert_eq!(chosen(tls, Some("other.test")), "any");
        assert_eq!(chosen(tls, None), "any", "no SNI: the listener without hostname");
        assert_eq!(served_san(tls, Some("x.b.example.com")).as_deref(), Some("*.b.example.com"));
        assert_eq!(served_san(tls, Some("a.b.example.com")).as_deref(), Some("a.b.example.com"));
    }

    #[test]
    fn without_a_listener_without_hostname_an_unknown_name_matches_nothing() {
        let yaml =
            gateway(&[&https("wild", Some("*.example.com"), "c")]) + &tls_secret("infra", "c", &["*.example.com"]);
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        let tls = t.listeners[0].tls.as_ref().unwrap();
        assert_eq!(chosen(tls, Some("a.example.com")), "wild");
        assert_eq!(chosen(tls, Some("a.example.org")), "-");
        assert_eq!(chosen(tls, None), "-", "no SNI and no listener without hostname");
    }

    /// Each way a certificateRef can be unusable gives the listener
    /// InvalidCertificateRef; the other listener of the mapping keeps its certificate.
    #[test]
    fn every_invalid_certificate_ref_case_names_its_problem_and_spares_the_other_listener() {
        let (c1, k1) = cert(&["a.test"]);
        let (_, k2) = cert(&["b.test"]);
        let cases: Vec<(&str, String, &str)> = vec![
            ("missing", String::new(), "Secret not found"),
            ("wrong type", secret("infra", "bad", "Opaque", &c1, &k1), "Secret type is Opaque"),
            (
                "malformed certificate",
                secret(
                    "infra",
                    "bad",
                    TLS_SECRET_TYPE,
                    "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
                    &k1,
                ),
                "tls.crt is not valid PEM",
            ),
            ("no certificate", secret("infra", "bad", TLS_SECRET_TYPE, "hello\n", &k1), "no PEM CERTIFICATE"),
            (
                "malformed key",
                secret(
                    "infra",
                    "bad",
                    TLS_SECRET_TYPE,
                    &c1,
                    "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                ),
                "tls.crt/tls.key cannot be used",
            ),
            ("no key", secret("infra", "bad", TLS_SECRET_TYPE, &c1, "nothing\n"), "no usable PEM private key"),
            (
                "key of another certificate",
                secret("infra", "bad", TLS_SECRET_TYPE, &c1, &k2),
                "not the key of the certificate",
            ),
        ];
        for (case, bad_secret, why) in cases {
            let yaml = gateway(&[&https("good", Some("good.test"), "ok"), &https("bad", Some("a.test"), "bad")])
                + &tls_secret("infra", "ok", &["good.test"])
                + &bad_secret;
            let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
            let lt = &t.listeners[0];
            let tls = lt.tls.as_ref().unwrap();
            let bad = tls.listener("bad").unwrap();
            let p = bad.certificate.as_ref().expect_err(case);
            assert_eq!(p.reason, "InvalidCertificateRef", "{case}: {p}");
            assert!(p.message.contains(why), "{case}: {p}");
            assert!(matches!(tls.select(Some("a.test")), Selected::Invalid(..)), "{case}");
            assert_eq!(chosen(tls, Some("good.test")), "good", "{case}: the other listener serves");
            assert!(lt.problems.iter().any(|x| x.contains("InvalidCertificateRef") && x.contains("bad")), "{case}");
            // both listeners are served (routes attach to both): only the handshake is refused
            assert_eq!(lt.listeners.len(), 2, "{case}");
        }
    }

    #[test]
    fn a_listener_without_certificate_refs_or_with_a_non_secret_ref_is_invalid() {
        let yaml = gateway(&[
            "{name: none, protocol: HTTPS, port: 443, hostname: a.test}",
            "{name: cm, protocol: HTTPS, port: 443, hostname: b.test, tls: {certificateRefs: [{kind: ConfigMap, name: c}]}}",
        ]);
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        let tls = t.listeners[0].tls.as_ref().unwrap();
        let none = tls.listener("none").unwrap().certificate.as_ref().unwrap_err();
        assert!(none.message.contains("empty") && none.reason == "InvalidCertificateRef", "{none}");
        let cm = tls.listener("cm").unwrap().certificate.as_ref().unwrap_err();
        assert!(cm.message.contains("ConfigMap is not a core Secret"), "{cm}");
    }

    /// Spec (ReferenceGrant): a certificateRef to another namespace needs a grant there
    /// from Gateways of the Gateway's namespace to that Secret (or all Secrets).
    #[test]
    fn a_secret_in_another_namespace_needs_a_reference_grant() {
        let listener = "{name: x, protocol: HTTPS, port: 443, tls: {certificateRefs: [{name: c, namespace: certs}]}}";
        let base = gateway(&[listener]) + &tls_secret("certs", "c", &["x.test"]);
        let t = table_of(&base, "127.0.0.1:8443=infra/gw:443");
        let p = t.listeners[0].tls.as_ref().unwrap().listeners[0].certificate.as_ref().unwrap_err().clone();
        assert_eq!(p.reason, "RefNotPermitted", "{p}");
        let grant = |from_kind: &str, from_ns: &str, to: &str| {
            format!(
                "\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: g, namespace: certs}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: {from_kind}, namespace: {from_ns}}}]\n  to: [{to}]\n"
            )
        };
        for (g, ok) in [
            (grant("Gateway", "infra", "{group: '', kind: Secret}"), true),
            (grant("Gateway", "infra", "{group: '', kind: Secret, name: c}"), true),
            (grant("Gateway", "infra", "{group: '', kind: Secret, name: other}"), false),
            (grant("HTTPRoute", "infra", "{group: '', kind: Secret}"), false),
            (grant("Gateway", "elsewhere", "{group: '', kind: Secret}"), false),
            (grant("Gateway", "infra", "{group: '', kind: Service}"), false),
        ] {
            let t = table_of(&(base.clone() + &g), "127.0.0.1:8443=infra/gw:443");
            let c = &t.listeners[0].tls.as_ref().unwrap().listeners[0].certificate;
            assert_eq!(c.is_ok(), ok, "{g}: {c:?}");
        }
    }

    #[test]
    fn base64_data_serves_like_string_data() {
        let (c, k) = cert(&["x.test"]);
        let b64 = |s: &str| {
            use base64_lite::encode;
            encode(s.as_bytes())
        };
        let yaml = gateway(&[&https("x", None, "c")])
            + &format!(
                "\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: c, namespace: infra}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
                b64(&c),
                b64(&k)
            );
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        assert_eq!(chosen(t.listeners[0].tls.as_ref().unwrap(), Some("x.test")), "x");
    }

    /// A tiny base64 encoder for the test (k8s-openapi decodes; nothing here encodes).
    mod base64_lite {
        pub fn encode(b: &[u8]) -> String {
            const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut out = String::new();
            for c in b.chunks(3) {
                let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
                for i in 0..4 {
                    if i <= c.len() {
                        out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                    } else {
                        out.push('=');
                    }
                }
            }
            out
        }
    }

    /// HTTP and HTTPS on one port is a protocol conflict: the HTTPS listener wins (the
    /// mapping is TLS), the HTTP one is reported and not served. Different ports with a
    /// mapping that names no port: the HTTP listeners are served, as before.
    #[test]
    fn http_and_https_on_one_port_conflict() {
        let yaml = gateway(&["{name: plain, protocol: HTTP, port: 443}", &https("secure", None, "c")])
            + &tls_secret("infra", "c", &["x.test"]);
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        let lt = &t.listeners[0];
        assert!(lt.tls.is_some());
        assert_eq!(lt.listeners, [("secure".to_string(), 443)]);
        assert!(lt.problems.iter().any(|p| p.contains("ProtocolConflict") && p.contains("plain")), "{:?}", lt.problems);

        let yaml = gateway(&["{name: plain, protocol: HTTP, port: 80}", &https("secure", None, "c")])
            + &tls_secret("infra", "c", &["x.test"]);
        let t = table_of(&yaml, "127.0.0.1:8080=infra/gw");
        let lt = &t.listeners[0];
        assert!(lt.tls.is_none(), "a mapping without port stays plain HTTP");
        assert_eq!(lt.listeners, [("plain".to_string(), 80)]);
        assert!(lt.problems.iter().any(|p| p.contains("secure") && p.contains(":443")), "{:?}", lt.problems);
    }

    #[test]
    fn an_https_passthrough_listener_is_not_served() {
        let yaml = gateway(&["{name: p, protocol: HTTPS, port: 443, tls: {mode: Passthrough}}"]);
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        assert!(t.listeners[0].listeners.is_empty());
        assert!(t.listeners[0].problems.iter().any(|p| p.contains("Passthrough")), "{:?}", t.listeners[0].problems);
    }

    /// Routes attach to HTTPS listeners like HTTP ones, and a TLS mapping's hosts are
    /// never joined in the kernel (the agent holds the TLS session).
    #[test]
    fn routes_attach_to_https_listeners_and_are_not_splice_safe() {
        let yaml = gateway(&[&https("secure", Some("*.example.com"), "c")])
            + &tls_secret("infra", "c", &["*.example.com"])
            + &crate::routing::tests::service("infra", "svc", &["10.0.0.1"])
            + &crate::routing::tests::route(
                "infra",
                "r",
                "  parentRefs: [{name: gw}]\n  hostnames: [a.example.com]\n  rules:\n  - backendRefs: [{name: svc, port: 80}]\n",
            );
        let t = table_of(&yaml, "127.0.0.1:8443=infra/gw:443");
        let lt = &t.listeners[0];
        let v = lt.vhost("a.example.com").expect("the route is served");
        assert!(v.splice.as_ref().unwrap_err().contains("TLS"), "{:?}", v.splice);
        assert!(!lt.any_splice_safe());
        assert_eq!(t.routes[0].attached, ["infra/gw/secure"]);
    }

    /// A certificate change is a new table: the same hostname then serves the new key.
    #[test]
    fn a_changed_secret_gives_the_new_certificate() {
        let g = gateway(&[&https("x", None, "c")]);
        let t1 = table_of(&(g.clone() + &tls_secret("infra", "c", &["one.test"])), "127.0.0.1:8443=infra/gw:443");
        let t2 = table_of(&(g + &tls_secret("infra", "c", &["two.test"])), "127.0.0.1:8443=infra/gw:443");
        assert_eq!(served_san(t1.listeners[0].tls.as_ref().unwrap(), None).as_deref(), Some("one.test"));
        assert_eq!(served_san(t2.listeners[0].tls.as_ref().unwrap(), None).as_deref(), Some("two.test"));
    }
}
