//! The `scripts` tier of `cargo xtask test`: `shellcheck` on every shell script of
//! the repository and `ruby -c` on the Vagrantfile (no hypervisor here: what of the
//! VM can be checked without one). The tools come from Debian (`cargo xtask setup`);
//! without them the tier is skipped, which fails the run under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// Directories searched for shell scripts (`*.sh`, and `vagrant/` files with a shell
/// shebang). `target/` and hidden directories are never entered.
const SCRIPT_DIRS: &[&str] = &["deploy", "vagrant", "xtask/scripts"];

/// One check and how it went.
#[derive(Debug, PartialEq)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub output: String,
}

/// The tools the tier runs, or the Debian packages to install.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = [("shellcheck", "shellcheck"), ("ruby", "ruby")]
        .into_iter()
        .filter(|(b, _)| crate::setup::which(b).is_none())
        .map(|(_, p)| p)
        .collect();
    (!missing.is_empty())
        .then(|| format!("needs {} (Debian packages; `cargo xtask setup` installs them)", missing.join(" ")))
}

/// Whether `path` is a shell script: a `.sh` name, or a `#!` line naming sh or bash.
pub fn is_shell_script(path: &Path, head: &str) -> bool {
    if path.extension().is_some_and(|e| e == "sh") {
        return true;
    }
    let first = head.lines().next().unwrap_or("");
    first.starts_with("#!") && (first.ends_with("/sh") || first.contains("bash") || first.ends_with(" sh"))
}

/// Every shell script under the script directories of `root`, sorted.
pub fn find_scripts(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if p.is_dir() {
                walk(&p, out);
            } else {
                let head = std::fs::read(&p).map(|b| String::from_utf8_lossy(&b[..b.len().min(128)]).into_owned());
                if is_shell_script(&p, &head.unwrap_or_default()) {
                    out.push(p);
                }
            }
        }
    }
    let mut out = Vec::new();
    for d in SCRIPT_DIRS {
        walk(&root.join(d), &mut out);
    }
    out.sort();
    out
}

/// Runs every check: shellcheck per script, `ruby -c` on the Vagrantfile.
pub fn run_checks(root: &Path) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    for script in find_scripts(root) {
        let out = Command::new("shellcheck")
            .arg("--external-sources")
            .arg(&script)
            .current_dir(root)
            .output()
            .context("running shellcheck")?;
        checks.push(Check {
            what: format!("shellcheck {}", script.strip_prefix(root).unwrap_or(&script).display()),
            ok: out.status.success(),
            output: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        });
    }
    let vagrantfile = root.join("vagrant/Vagrantfile");
    let out = Command::new("ruby").arg("-c").arg(&vagrantfile).output().context("running ruby -c")?;
    checks.push(Check {
        what: "ruby -c vagrant/Vagrantfile".into(),
        ok: out.status.success(),
        output: String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    });
    Ok(checks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_scripts_by_name_or_shebang() {
        assert!(is_shell_script(Path::new("a/b.sh"), ""));
        assert!(is_shell_script(Path::new("vagrant/provision/docker"), "#!/usr/bin/env bash\nset -e\n"));
        assert!(is_shell_script(Path::new("x"), "#!/bin/sh\n"));
        assert!(!is_shell_script(Path::new("vagrant/Vagrantfile"), "# -*- mode: ruby -*-\n"));
        assert!(!is_shell_script(Path::new("deploy/k3d/rbac.yaml"), "# comment\n"));
        assert!(!is_shell_script(Path::new("x.py"), "#!/usr/bin/env python3\n"));
    }

    #[test]
    fn the_repository_has_the_scripts_the_tier_checks() {
        // the tier must not pass by finding nothing: the k3d takeover and the VM's
        // provisioning are shell scripts
        let scripts = find_scripts(&crate::workspace_root());
        let names: Vec<String> = scripts.iter().map(|p| p.display().to_string()).collect();
        assert!(names.iter().any(|n| n.ends_with("deploy/k3d/agent-kubeconfig.sh")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("/vagrant/")), "{names:?}");
        assert!(crate::workspace_root().join("vagrant/Vagrantfile").is_file());
    }
}
