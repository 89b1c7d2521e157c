//! Route status: the problems found while compiling, typed, and the Accepted and
//! ResolvedRefs conditions they become under each parentRef.

use super::{Condition, ParentStatus};

use crate::resources::ObjectKey;

/// The Gateway API reasons a route's conditions carry when something is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reason {
    NoMatchingParent,
    NotAllowedByListeners,
    NoMatchingListenerHostname,
    UnsupportedValue,
    InvalidKind,
    RefNotPermitted,
    BackendNotFound,
    /// A listener's certificateRef cannot be used (HTTPS listeners).
    InvalidCertificateRef,
}

impl Reason {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::NoMatchingParent => "NoMatchingParent",
            Self::NotAllowedByListeners => "NotAllowedByListeners",
            Self::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            Self::UnsupportedValue => "UnsupportedValue",
            Self::InvalidKind => "InvalidKind",
            Self::RefNotPermitted => "RefNotPermitted",
            Self::BackendNotFound => "BackendNotFound",
            Self::InvalidCertificateRef => "InvalidCertificateRef",
        }
    }
}

/// A problem found while compiling a route: its reason and what exactly is wrong.
/// Shown as `Reason: message` (in `ingress routes`, `/routes` and the logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) reason: Reason,
    pub(super) message: String,
}

impl Problem {
    pub(super) fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }

    /// The same problem, with `context` (where it was found) before the message.
    pub(super) fn within(&self, context: &str) -> Self {
        Self { reason: self.reason, message: format!("{context}: {}", self.message) }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

/// A parentRef to a served Gateway, and why it was not accepted.
pub(super) struct ParentAttach {
    pub(super) gateway: ObjectKey,
    pub(super) section_name: Option<String>,
    pub(super) port: Option<i32>,
    pub(super) rejection: Option<Problem>,
}

/// The first problem of each kind found while compiling a route's rules.
#[derive(Default)]
pub(super) struct RuleIssues {
    /// For Accepted=False: an unsupported value.
    pub(super) unsupported: Option<Problem>,
    /// For ResolvedRefs=False.
    pub(super) unresolved: Option<Problem>,
}

pub(super) fn parent_statuses(parents: Vec<ParentAttach>, issues: &RuleIssues) -> Vec<ParentStatus> {
    parents
        .into_iter()
        .map(|p| {
            let accepted = match (&p.rejection, &issues.unsupported) {
                (Some(p), _) | (None, Some(p)) => Condition {
                    kind: "Accepted".into(),
                    status: false,
                    reason: p.reason.as_str().into(),
                    message: p.message.clone(),
                },
                (None, None) => Condition {
                    kind: "Accepted".into(),
                    status: true,
                    reason: "Accepted".into(),
                    message: "the route is served".into(),
                },
            };
            let resolved = match &issues.unresolved {
                Some(p) => Condition {
                    kind: "ResolvedRefs".into(),
                    status: false,
                    reason: p.reason.as_str().into(),
                    message: p.message.clone(),
                },
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
