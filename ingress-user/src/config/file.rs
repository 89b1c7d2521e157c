//! The config file of `ingress run --config FILE` (TOML): every key is a flag of `ingress
//! run`, its name with `_` for `-` (`--head-timeout` is `head_timeout`), its value what
//! the flag takes (a repeatable flag is an array). Pure: text in, [`FileConfig`] or a
//! [`FileError`] naming the file, the line, the column and the key out.
//!
//! TOML because the `toml` crate keeps the position of every key and value, so an
//! error points at its line, and serde's `deny_unknown_fields` turns a misspelt key
//! into an error instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Deserialize;

use crate::cli::{DataplaneMode, OnOff};
use crate::config::{ListenMapping, PortCidr};
use crate::datapath::l4::L4Mapping;
use crate::datapath::pod_routes::PodRoute;

/// Where the packaged unit reads its config.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ebpf-ingress/config.toml";

/// The file's settings; a key left out is `None` (the flag's default then applies).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub manifests: Option<PathBuf>,
    pub kubeconfig: Option<PathBuf>,
    pub write_status: Option<bool>,
    pub listen: Option<Vec<Parsed<ListenMapping>>>,
    pub interface: Option<String>,
    pub dataplane: Option<Choice<DataplaneMode>>,
    pub admin: Option<Parsed<SocketAddr>>,
    pub forwarded_headers: Option<Choice<OnOff>>,
    pub request_id: Option<bool>,
    pub head_timeout: Option<u64>,
    pub max_connections_per_source: Option<u32>,
    pub drain_timeout: Option<u64>,
    pub l4: Option<Vec<Parsed<L4Mapping>>>,
    pub l4_reply_interface: Option<Vec<String>>,
    pub deny: Option<Vec<Parsed<PortCidr>>>,
    pub allow: Option<Vec<Parsed<PortCidr>>>,
    pub syn_rate: Option<u64>,
    pub syn_burst: Option<u64>,
    pub cgroup: Option<PathBuf>,
    pub pod_cgroup: Option<PathBuf>,
    pub pod_route: Option<Vec<Parsed<PodRoute>>>,
    pub pin_path: Option<PathBuf>,
    pub detach_on_exit: Option<bool>,
    pub h2_max_concurrent_streams: Option<u32>,
    pub h2_idle_timeout: Option<u64>,
    pub h2_keepalive_interval: Option<u64>,
    pub join_mode: Option<Choice<crate::datapath::join_choice::JoinMode>>,
    pub bind_in_kernel: Option<Choice<OnOff>>,
    pub workers: Option<usize>,
}

/// A parsed file: its settings and where each top-level key is, for errors found
/// after parsing (two keys that conflict, a value another key makes invalid).
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFile {
    /// The path as given (errors name it).
    pub path: String,
    pub config: FileConfig,
    /// Top-level key -> (line, column), 1-based.
    pub positions: BTreeMap<String, (usize, usize)>,
}

impl ConfigFile {
    /// An error about top-level `key` of this file.
    pub fn error_at(&self, key: &str, reason: impl Into<String>) -> FileError {
        let (line, column) = self.positions.get(key).copied().unwrap_or((1, 1));
        FileError { file: self.path.clone(), line, column, key: Some(key.to_string()), reason: reason.into() }
    }
}

/// `FILE:LINE:COL: key `KEY`: REASON` (without a key for a syntax error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub reason: String,
}

impl Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        f.write_str(&self.reason)
    }
}

/// Reads and parses `path`.
pub fn load(path: &std::path::Path) -> Result<ConfigFile, FileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| FileError {
        file: name.clone(),
        line: 0,
        column: 0,
        key: None,
        reason: format!("cannot read the config file: {e}"),
    })?;
    parse(&name, &text)
}

/// Parses the text of file `name`.
pub fn parse(name: &str, text: &str) -> Result<ConfigFile, FileError> {
    let at = |span: Option<std::ops::Range<usize>>| line_col(text, span.map_or(0, |s| s.start));
    let table = toml::de::DeTable::parse(text).map_err(|e| {
        let (line, column) = at(e.span());
        FileError { file: name.into(), line, column, key: None, reason: first_line(e.message()) }
    })?;
    let positions =
        table.get_ref().iter().map(|(k, _)| (k.get_ref().to_string(), line_col(text, k.span().start))).collect();
    let de = toml::de::Deserializer::from(table);
    let config: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let span = inner.span();
        let (line, column) = at(span.clone());
        let message = inner.message();
        let (key, reason) = if message.starts_with("unknown field") {
            // the span is the unknown key itself
            let unknown = span.and_then(|s| text.get(s)).unwrap_or("?").trim_matches(['"', '\'']).to_string();
            // serde_path_to_error's path already ends with the unknown key
            let key = if path == "." || path.is_empty() {
                unknown
            } else if path == unknown || path.ends_with(&format!(".{unknown}")) {
                path
            } else {
                format!("{path}.{unknown}")
            };
            (
                key,
                "unknown key (the keys are the flags of `ingress run` with `_` for `-`; see deploy/config.toml)".into(),
            )
        } else {
            (path, first_line(message))
        };
        FileError { file: name.into(), line, column, key: Some(key), reason }
    })?;
    Ok(ConfigFile { path: name.into(), config, positions })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// A string value parsed with the type's `FromStr` (the flag's syntax and errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed<T>(pub T);

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: Display,
{
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(|s: &str| s.parse().map(Parsed).map_err(|e: T::Err| e.to_string())))
    }
}

/// A string value that must be one of a clap `ValueEnum`'s names.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice<T>(pub T);

impl<'de, T: clap::ValueEnum> Deserialize<'de> for Choice<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(StrVisitor(|s: &str| {
            T::from_str(s, false).map(Choice).map_err(|_| {
                let names: Vec<String> = T::value_variants()
                    .iter()
                    .filter_map(|v| v.to_possible_value().map(|p| format!("`{}`", p.get_name())))
                    .collect();
                format!("`{s}` is not one of {}", names.join(", "))
            })
        }))
    }
}

/// Parses a string inside the deserializer's call, so the error carries the value's
/// own position (an array element's, not the array's).
struct StrVisitor<F>(F);

impl<'de, T, F: FnOnce(&str) -> Result<T, String>> serde::de::Visitor<'de> for StrVisitor<F> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).map_err(E::custom)
    }
}

/// The values of an optional list of [`Parsed`].
pub fn values<T: Clone>(v: &Option<Vec<Parsed<T>>>) -> Option<Vec<T>> {
    v.as_ref().map(|v| v.iter().map(|p| p.0.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
# OpenChoreo's single VM
interface = "eth0"
listen = [
  "0.0.0.0:8080=openchoreo-control-plane/gateway-default:80",
  "0.0.0.0:9080=openchoreo-data-plane/gateway-default:80",
]
l4 = ["6550=172.18.0.2:6443"]
deny = ["8080=203.0.113.0/24"]
syn_rate = 200
head_timeout = 15
forwarded_headers = "off"
dataplane = "ebpf"
admin = "127.0.0.1:9901"
kubeconfig = "/etc/ebpf-ingress/kubeconfig"
write_status = true
pod_route = ["10.42.0.0/24=172.18.0.2"]
"#;

    #[test]
    fn parses_every_kind_of_value_and_records_key_positions() {
        let f = parse("c.toml", GOOD).unwrap();
        let c = &f.config;
        assert_eq!(c.interface.as_deref(), Some("eth0"));
        let listen = values(&c.listen).unwrap();
        assert_eq!(listen.len(), 2);
        assert_eq!(listen[1].to_string(), "0.0.0.0:9080=openchoreo-data-plane/gateway-default:80");
        assert_eq!(values(&c.l4).unwrap()[0].port, 6550);
        assert_eq!(values(&c.deny).unwrap()[0].to_string(), "8080=203.0.113.0/24");
        assert_eq!((c.syn_rate, c.head_timeout, c.syn_burst), (Some(200), Some(15), None));
        assert_eq!(c.forwarded_headers, Some(Choice(OnOff::Off)));
        assert_eq!(c.dataplane, Some(Choice(DataplaneMode::Ebpf)));
        assert_eq!(c.admin, Some(Parsed("127.0.0.1:9901".parse().unwrap())));
        assert_eq!(c.write_status, Some(true));
        assert_eq!(values(&c.pod_route).unwrap().len(), 1);
        assert_eq!(f.positions.get("interface"), Some(&(3, 1)));
        assert_eq!(f.positions.get("l4"), Some(&(8, 1)));
        assert_eq!(f.error_at("l4", "x").to_string(), "c.toml:8:1: key `l4`: x");
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(parse("e.toml", "# nothing\n").unwrap().config, FileConfig::default());
    }

    /// (file text, line, column, key, part of the reason)
    const BAD: &[(&str, usize, usize, Option<&str>, &str)] = &[
        ("interface = \"eth0\"\nlisten_port = 8080\n", 2, 1, Some("listen_port"), "unknown key"),
        ("head_timeout = \"ten\"\n", 1, 16, Some("head_timeout"), "invalid type: string \"ten\""),
        ("head_timeout = -1\n", 1, 16, Some("head_timeout"), "invalid value"),
        (
            "listen = [\n  \"0.0.0.0:8080=ns/gw\",\n  \"8080=ns/gw\",\n]\n",
            3,
            3,
            Some("listen[1]"),
            "invalid --listen `8080=ns/gw`: ADDR is not IP:PORT",
        ),
        ("deny = [\"8080=10.0.0.0/33\"]\n", 1, 9, Some("deny[0]"), "`/33` is not 0..=32"),
        ("dataplane = \"xdp\"\n", 1, 13, Some("dataplane"), "`xdp` is not one of `ebpf`, `userspace`"),
        ("forwarded_headers = true\n", 1, 21, Some("forwarded_headers"), "invalid type: boolean"),
        ("admin = \"localhost\"\n", 1, 9, Some("admin"), "invalid socket address"),
        ("l4 = \"6550=1.2.3.4:6443\"\n", 1, 6, Some("l4"), "expected a sequence"),
        ("interface = \"eth0\"\ninterface = \"eth1\"\n", 2, 1, None, "duplicate key"),
        ("interface = eth0\n", 1, 13, None, "string values must be quoted"),
        ("write_status = yes\n", 1, 16, None, ""),
    ];

    #[test]
    fn errors_name_the_file_line_column_and_key() {
        for (text, line, column, key, why) in BAD {
            let e = parse("/etc/x.toml", text).expect_err(text);
            assert_eq!((e.line, e.column, e.key.as_deref()), (*line, *column, *key), "{text}: {e}");
            assert!(e.reason.contains(why), "{text}: {e}");
            let shown = e.to_string();
            assert!(shown.starts_with(&format!("/etc/x.toml:{line}:{column}: ")), "{shown}");
            if let Some(k) = key {
                assert!(shown.contains(&format!("key `{k}`: ")), "{shown}");
            }
        }
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(line_col("a\n\u{e9}\u{e9}x", 6), (2, 3));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = load(std::path::Path::new("/nonexistent/ingress.toml")).unwrap_err().to_string();
        assert!(e.starts_with("/nonexistent/ingress.toml:") && e.contains("cannot read"), "{e}");
    }
}
