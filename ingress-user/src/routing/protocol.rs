//! The protocol the proxy speaks to a backend, from the Service port's `appProtocol`
//! (Kubernetes' standard application protocols, GEP-1911). Pure.
//!
//! | `appProtocol`                         | to the pod                                  |
//! |---------------------------------------|---------------------------------------------|
//! | `kubernetes.io/h2c`                   | HTTP/2 over cleartext, prior knowledge      |
//! | unset, `http`, `kubernetes.io/ws`     | HTTP/1.1 (WebSocket upgrades included)      |
//! | anything else (`grpc`, `https`, ...)  | HTTP/1.1, as an unset one (not recognized)  |
//!
//! Values are compared exactly (Kubernetes' own values are lowercase; `appProtocol`
//! is a free-form string otherwise). `kubernetes.io/wss` and `https` name TLS to the
//! pod, which the proxy does not originate: such ports get cleartext HTTP/1.1.

use serde::Serialize;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum BackendProtocol {
    /// HTTP/1.1 over a pooled connection (the default).
    #[default]
    #[serde(rename = "http/1.1")]
    Http1,
    /// HTTP/2 with prior knowledge over cleartext (`kubernetes.io/h2c`): every request
    /// is a stream on a shared connection to the endpoint.
    #[serde(rename = "h2c")]
    H2c,
}

impl BackendProtocol {
    /// The `appProtocol` standard value for HTTP/2 over cleartext.
    pub const H2C_APP_PROTOCOL: &'static str = "kubernetes.io/h2c";

    /// The protocol for a Service port with this `appProtocol` (see the module text).
    pub fn from_app_protocol(app_protocol: Option<&str>) -> Self {
        match app_protocol {
            Some(Self::H2C_APP_PROTOCOL) => Self::H2c,
            _ => Self::Http1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::H2c => "h2c",
        }
    }
}

impl std::fmt::Display for BackendProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_protocol_picks_the_backend_protocol() {
        use BackendProtocol::*;
        for (app, want) in [
            (None, Http1),
            (Some("kubernetes.io/h2c"), H2c),
            (Some("http"), Http1),
            (Some("kubernetes.io/ws"), Http1),
            (Some("kubernetes.io/wss"), Http1),
            (Some("grpc"), Http1),
            (Some("KUBERNETES.IO/H2C"), Http1),
            (Some(""), Http1),
        ] {
            assert_eq!(BackendProtocol::from_app_protocol(app), want, "{app:?}");
        }
        assert_eq!(serde_json::to_value(H2c).unwrap(), "h2c");
        assert_eq!(Http1.to_string(), "http/1.1");
    }

    /// A Service `name` in `infra` with ports 80 (appProtocol `app80`) and 81 (none).
    fn service(name: &str, app80: &str) -> String {
        format!(
            "
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: infra}}
spec: {{ports: [{{name: grpc, port: 80, targetPort: 9000, appProtocol: '{app80}'}}, {{name: web, port: 81, targetPort: 8080}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-abc, namespace: infra, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: 9000, protocol: TCP}}, {{name: web, port: 8080, protocol: TCP}}]
endpoints: [{{addresses: ['10.0.0.1'], conditions: {{ready: true}}}}]
"
        )
    }

    #[test]
    fn the_service_port_s_app_protocol_reaches_the_backend_and_its_view() {
        use crate::routing::tests::{GATEWAY, route, table};
        let body = "  parentRefs: [{name: gw}]
  hostnames: [g.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /grpc}}]
    backendRefs: [{name: g, port: 80}]
    filters: [{type: RequestMirror, requestMirror: {backendRef: {name: g, port: 80}}}]
  - backendRefs: [{name: g, port: 81}]
";
        let yaml = format!(
            "{GATEWAY}{}{}{}",
            service("g", "kubernetes.io/h2c"),
            route("infra", "r", body),
            route(
                "infra",
                "w",
                "  parentRefs: [{name: gw}]\n  hostnames: [w.test]\n  rules:\n  - backendRefs: [{name: g, port: 81}]\n"
            )
        );
        let t = table(&yaml, "127.0.0.1:81=infra/gw:81");
        let l = &t.listeners[0];
        let g = l.vhost("g.test").unwrap();
        let grpc = &g.entries[0].rule;
        assert_eq!(grpc.backends[0].protocol, BackendProtocol::H2c, "appProtocol kubernetes.io/h2c");
        assert_eq!(g.entries[1].rule.backends[0].protocol, BackendProtocol::Http1, "the port without appProtocol");
        let crate::routing::Filter::RequestMirror(m) = &grpc.filters[0] else { panic!("{:?}", grpc.filters) };
        assert_eq!(m.protocol, BackendProtocol::H2c, "a mirror to the h2c port");
        // a host with one h2c backend is never joined in the kernel (requests are re-framed)
        let w = l.vhost("w.test").unwrap();
        assert_eq!(w.splice, Ok(()), "the HTTP/1.1 port alone is splice-safe");
        let yaml_h2 = yaml.replace("{name: g, port: 81}]\n", "{name: g, port: 80}]\n");
        let t2 = table(&yaml_h2, "127.0.0.1:81=infra/gw:81");
        let why = t2.listeners[0].vhost("w.test").unwrap().splice.clone().unwrap_err();
        assert!(why.contains("h2c backend"), "{why}");
        // `ingress routes` names the protocol
        let text = crate::routing::view::TableView::of(&t).format_text();
        assert!(text.contains("infra/g:80 w1 h2c -> [10.0.0.1:9000]"), "{text}");
        assert!(text.contains("infra/g:81 w1 http/1.1 -> [10.0.0.1:8080]"), "{text}");
    }
}
