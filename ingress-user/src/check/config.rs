//! `ingress check --config FILE`: validates the agent's config file without starting
//! anything: it parses and merges as `ingress run --config FILE` would, the manifests
//! directory (if that is the route source) loads, the kubeconfig (if named) is
//! readable. Ok: what the agent would run with; Err: FILE:LINE:COL: key `KEY`: REASON.

use std::path::Path;

use anyhow::{Context, Result};

use crate::config::settings::{RunSettings, SourceSetting, merge};

/// Checks `path`; the summary lines to print.
pub fn validate(path: &Path) -> Result<String> {
    let file = crate::config::file::load(path)?;
    let cli = crate::cli::parse_from(["ingress", "run", "--config", &path.display().to_string()])?;
    let (_, flags, _) = crate::cli::run_flags(cli.cmd).expect("a run command");
    // no flags given: the file's keys over the flags' defaults
    let settings = merge(&flags, &Default::default(), Some(&file))?;
    let source = match &settings.source {
        SourceSetting::Manifests(dir) => {
            let res = crate::sources::manifest::load_dir(dir)
                .with_context(|| format!("{}: key `manifests`: loading {}", path.display(), dir.display()))?;
            format!("manifests in {} ({})", dir.display(), res.summary())
        }
        SourceSetting::Kubernetes { kubeconfig: Some(k), write_status } => {
            std::fs::File::open(k)
                .with_context(|| format!("{}: key `kubeconfig`: cannot read {}", path.display(), k.display()))?;
            format!("Kubernetes via {}{}", k.display(), if *write_status { ", writing status" } else { "" })
        }
        SourceSetting::Kubernetes { kubeconfig: None, write_status } => format!(
            "Kubernetes (in-cluster, then $KUBECONFIG or ~/.kube/config){}",
            if *write_status { ", writing status" } else { "" }
        ),
    };
    Ok(summary(path, &settings, &source))
}

/// The lines `ingress check --config` prints for a valid file.
fn summary(path: &Path, s: &RunSettings, source: &str) -> String {
    let mut out = format!("{}: ok\n", path.display());
    out += &format!("  route source   {source}\n");
    for m in &s.listen {
        out += &format!("  listen         {m}\n");
    }
    for m in &s.l4 {
        out += &format!("  l4             {m}\n");
    }
    let dp = match s.dataplane {
        crate::cli::DataplaneMode::Ebpf => format!("ebpf on {}", s.interface.as_deref().unwrap_or("?")),
        crate::cli::DataplaneMode::Userspace => "userspace".into(),
    };
    out += &format!("  dataplane      {dp}\n  admin          {}\n  pin path       {}\n", s.admin, s.pin_path.display());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ingress-check-config-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_good_file_is_summarized_and_a_bad_one_named_with_its_line() {
        let dir = std::env::temp_dir().join(format!("ingress-check-config-{}-m", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = write("good.toml", &format!("manifests = {:?}\nlisten = [\"127.0.0.1:8080=a/b\"]\n", dir.display()));
        let out = validate(&good).unwrap();
        assert!(out.contains(": ok\n") && out.contains("listen         127.0.0.1:8080=a/b"), "{out}");
        assert!(out.contains("0 Gateways"), "{out}");
        let bad = write("bad.toml", "listen = [\"127.0.0.1:8080=a/b\"]\nhead_timeout = \"x\"\n");
        let e = validate(&bad).unwrap_err().to_string();
        assert_eq!(e.split(": key").next().unwrap(), format!("{}:2:16", bad.display()), "{e}");
        let missing = write("missing.toml", "manifests = \"/nonexistent/dir\"\nlisten = [\"127.0.0.1:8080=a/b\"]\n");
        let e = format!("{:#}", validate(&missing).unwrap_err());
        assert!(e.contains("key `manifests`"), "{e}");
        for p in [good, bad, missing] {
            let _ = std::fs::remove_file(p);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
