//! Route status: the problems found while compiling, typed, and the Accepted and
//! ResolvedRefs conditions they become under each parentRef.


use super::{
    Condition, ParentStatus,
};


use super::attach::ParentAttach;

/// The first problem of each kind found while compiling a route's rules.
#[derive(Default)]
pub(super) struct RuleIssues {
    /// (reason, message) for Accepted=False: an unsupported value.
    pub(super) unsupported: Option<(String, String)>,
    /// (reason, message) for ResolvedRefs=False.
    pub(super) unresolved: Option<(String, String)>,
}

pub(super) fn split_reason(s: &str) -> (String, String) {
    match s.split_once(": ") {
        Some((r, m)) if !r.contains(' ') => (r.to_string(), m.to_string()),
        _ => ("UnsupportedValue".to_string(), s.to_string()),
    }
}

pub(super) fn parent_statuses(parents: Vec<ParentAttach>, issues: &RuleIssues) -> Vec<ParentStatus> {
    parents
        .into_iter()
        .map(|p| {
            let accepted = match (&p.rejection, &issues.unsupported) {
                (Some((r, m)), _) | (None, Some((r, m))) => {
                    Condition { kind: "Accepted".into(), status: false, reason: r.clone(), message: m.clone() }
                }
                (None, None) => Condition {
                    kind: "Accepted".into(),
                    status: true,
                    reason: "Accepted".into(),
                    message: "the route is served".into(),
                },
            };
            let resolved = match &issues.unresolved {
                Some((r, m)) => {
                    Condition { kind: "ResolvedRefs".into(), status: false, reason: r.clone(), message: m.clone() }
                }
                None => Condition {
                    kind: "ResolvedRefs".into(),
                    status: true,
                    reason: "ResolvedRefs".into(),
                    message: "all references resolved".into(),
                },
            };
            ParentStatus {
                gateway: p.gateway,
                section_name: p.section_name,
                port: p.port,
                conditions: vec![accepted, resolved],
            }
        })
        .collect()
}

