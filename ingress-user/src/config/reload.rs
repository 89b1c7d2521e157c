//! What a SIGHUP changes: the difference between the running settings and the re-read
//! ones, split into what the agent applies live and the keys that need a restart.
//! Pure; `crate::reload` applies the result.

use std::time::Duration;

use super::settings::RunSettings;
use crate::cli::DataplaneMode;
use crate::config::ListenMapping;
use crate::datapath::guard::GuardRules;
use crate::proxy::ProxyConfig;

/// The changes of one reload.
#[derive(Debug, Default, PartialEq)]
pub struct ReloadPlan {
    /// The new listen mappings, when they changed.
    pub listen: Option<Vec<ListenMapping>>,
    /// The new limits and headers of the proxy, when they changed.
    pub proxy: Option<ProxyConfig>,
    /// The guard's rules to program (they changed, or the ports they cover did).
    pub guard: Option<GuardRules>,
    pub drain: Option<Duration>,
    pub detach_on_exit: Option<bool>,
    /// Keys whose new value takes effect only after a restart; the running value stays.
    pub restart: Vec<&'static str>,
}

impl ReloadPlan {
    pub fn is_empty(&self) -> bool {
        *self == ReloadPlan::default()
    }
}

/// Compares the running settings with the new ones.
pub fn plan(old: &RunSettings, new: &RunSettings) -> ReloadPlan {
    let mut p = ReloadPlan::default();
    if old.listen != new.listen {
        p.listen = Some(new.listen.clone());
    }
    if old.proxy != new.proxy {
        p.proxy = Some(new.proxy.clone());
    }
    // the SYN limit covers every listen port: new ports mean new guard entries
    let ports_changed = p.listen.is_some() && old.guard.syn_limited();
    if (old.guard != new.guard || ports_changed) && old.dataplane == DataplaneMode::Ebpf {
        p.guard = Some(new.guard.clone());
    }
    if old.drain != new.drain {
        p.drain = Some(new.drain);
    }
    if old.detach_on_exit != new.detach_on_exit {
        p.detach_on_exit = Some(new.detach_on_exit);
    }
    let restart: [(&'static str, bool); 12] = [
        ("manifests / kubeconfig / write_status (the route source)", old.source != new.source),
        ("interface", old.interface != new.interface),
        ("dataplane", old.dataplane != new.dataplane),
        ("admin", old.admin != new.admin),
        ("l4", old.l4 != new.l4),
        ("l4_reply_interface", old.l4_reply_interface != new.l4_reply_interface),
        ("cgroup", old.cgroup != new.cgroup),
        ("pod_cgroup", old.pod_cgroup != new.pod_cgroup),
        ("pod_route", old.pod_route != new.pod_route),
        ("pin_path", old.pin_path != new.pin_path),
        ("workers", old.workers != new.workers),
        // the guard's rules live in XDP's maps: without XDP a change needs a restart
        ("deny / allow / syn_rate / syn_burst", old.guard != new.guard && old.dataplane != DataplaneMode::Ebpf),
    ];
    p.restart = restart.into_iter().filter(|(_, changed)| *changed).map(|(k, _)| k).collect();
    p
}

/// The proxy serves listen mapping number `i` of the routing table, and a connection
/// keeps its number for its life: so a reload never renumbers. Slots hold every
/// mapping served since start; a removed mapping's slot stops accepting (its open
/// connections finish under its routes) and is reused if the mapping comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPlan {
    /// The table's mappings, by slot (old slots first, in place).
    pub slots: Vec<ListenMapping>,
    /// Slots to bind and start accepting on.
    pub open: Vec<usize>,
    /// Slots to stop accepting on.
    pub close: Vec<usize>,
}

/// The slots after a reload to `new`, from `slots` of which `active` accept now.
pub fn slots(slots: &[ListenMapping], active: &[bool], new: &[ListenMapping]) -> SlotPlan {
    let mut out = slots.to_vec();
    let mut open = Vec::new();
    let mut wanted = vec![false; slots.len()];
    for m in new {
        match out.iter().position(|s| s == m) {
            Some(i) => {
                if i < wanted.len() {
                    wanted[i] = true;
                }
                if !active.get(i).copied().unwrap_or(false) && !open.contains(&i) {
                    open.push(i);
                }
            }
            None => {
                out.push(m.clone());
                open.push(out.len() - 1);
            }
        }
    }
    let close = (0..slots.len()).filter(|&i| active.get(i).copied().unwrap_or(false) && !wanted[i]).collect();
    SlotPlan { slots: out, open, close }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{RunFlags, merge};

    fn settings(args: &[&str]) -> RunSettings {
        let base = ["ingress", "run", "--manifests", "/m"];
        let cli = crate::cli::parse_from(base.iter().chain(args)).expect("flags");
        let (_, flags, given): (_, RunFlags, _) = crate::cli::run_flags(cli.cmd).expect("run");
        merge(&flags, &given.into_iter().collect(), None).expect("valid")
    }

    fn m(s: &str) -> ListenMapping {
        s.parse().unwrap()
    }

    #[test]
    fn nothing_changed_is_an_empty_plan() {
        let a = settings(&["--listen", "127.0.0.1:8080=a/b"]);
        assert!(plan(&a, &a.clone()).is_empty());
    }

    #[test]
    fn listeners_limits_and_drain_change_live() {
        let a = settings(&["--listen", "127.0.0.1:8080=a/b"]);
        let b = settings(&[
            "--listen",
            "127.0.0.1:8081=a/b",
            "--head-timeout",
            "3",
            "--max-connections-per-source",
            "5",
            "--drain-timeout",
            "1",
        ]);
        let p = plan(&a, &b);
        assert_eq!(p.listen, Some(vec![m("127.0.0.1:8081=a/b")]));
        let proxy = p.proxy.as_ref().expect("proxy changed");
        assert_eq!((proxy.head_timeout, proxy.max_connections_per_source), (Duration::from_secs(3), 5));
        assert_eq!(p.drain, Some(Duration::from_secs(1)));
        assert!(p.restart.is_empty(), "{:?}", p.restart);
        assert_eq!(p.guard, None, "no XDP: nothing to program");
    }

    #[test]
    fn keys_that_need_a_restart_are_named_and_not_applied() {
        let a = settings(&["--listen", "127.0.0.1:8080=a/b"]);
        let b =
            settings(&["--listen", "127.0.0.1:8080=a/b", "--admin", "127.0.0.1:9999", "--pin-path", "/sys/fs/bpf/x"]);
        let p = plan(&a, &b);
        assert_eq!(p.restart, ["admin", "pin_path"]);
        assert!(p.listen.is_none() && p.proxy.is_none());
        let mut c = a.clone();
        c.source = crate::config::settings::SourceSetting::Manifests("/other".into());
        c.interface = Some("eth1".into());
        let p = plan(&a, &c);
        assert_eq!(p.restart, ["manifests / kubeconfig / write_status (the route source)", "interface"]);
    }

    #[test]
    fn guard_changes_are_programmed_with_xdp_and_need_a_restart_without() {
        let mut a = settings(&["--listen", "127.0.0.1:8080=a/b"]);
        let mut b = a.clone();
        b.guard.deny = vec!["8080=10.0.0.0/8".parse().unwrap()];
        assert_eq!(plan(&a, &b).restart, ["deny / allow / syn_rate / syn_burst"]);
        a.dataplane = DataplaneMode::Ebpf;
        b.dataplane = DataplaneMode::Ebpf;
        let p = plan(&a, &b);
        assert_eq!(p.guard, Some(b.guard.clone()));
        assert!(p.restart.is_empty());
        // a SYN limit covers the listen ports: a new port reprograms the guard
        a.guard.syn_rate = 10;
        a.guard.syn_burst = 10;
        let mut c = a.clone();
        c.listen = vec![m("127.0.0.1:8081=a/b")];
        assert_eq!(plan(&a, &c).guard, Some(a.guard.clone()));
    }

    #[test]
    fn slots_never_renumber() {
        let (a, b, c) = (m("0.0.0.0:8080=x/a"), m("0.0.0.0:9080=x/b"), m("0.0.0.0:7080=x/c"));
        // 8080 removed, 7080 added: 8080's slot stops, 9080 keeps slot 1, 7080 is slot 2
        let p = slots(&[a.clone(), b.clone()], &[true, true], &[b.clone(), c.clone()]);
        assert_eq!(p, SlotPlan { slots: vec![a.clone(), b.clone(), c.clone()], open: vec![2], close: vec![0] });
        // 8080 comes back: its old slot opens again
        let p = slots(&p.slots, &[false, true, true], &[a.clone(), b.clone(), c.clone()]);
        assert_eq!(p, SlotPlan { slots: vec![a.clone(), b.clone(), c.clone()], open: vec![0], close: vec![] });
        // the same mapping: nothing to do
        let p = slots(std::slice::from_ref(&a), &[true], std::slice::from_ref(&a));
        assert!(p.open.is_empty() && p.close.is_empty());
    }
}
