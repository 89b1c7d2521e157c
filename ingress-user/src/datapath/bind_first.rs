//! Delayed binding's first-segment program (`bind_first`, ingress_common::first_segment):
//! its fd and its outcome counters. The agent attaches nothing yet (`--bind-in-kernel` is
//! refused); the packet tier loads and runs it on built packets.

use aya::maps::{Array, PerCpuArray};
use ingress_common::first_segment::{FIRST_COUNTS, FirstResult};
use ingress_common::maps::{
    BIND_FIRST_COUNTS_MAP, BIND_FIRST_LAST_MAP, BIND_FIRST_NEEDS, BIND_FIRST_PROGRAM, BIND_FIRST_SINCE,
};

use super::{Dataplane, EbpfError};

impl Dataplane {
    /// Loads (not attaches) `bind_first` and returns its fd; refused, naming the kernel
    /// function, on a kernel without `bpf_sk_assign_tcp_reqsk` (6.11).
    pub fn bind_first_program_fd(&mut self) -> Result<std::os::fd::RawFd, EbpfError> {
        self.kfunc_tc_program_fd(BIND_FIRST_PROGRAM, BIND_FIRST_NEEDS, BIND_FIRST_SINCE)
    }

    /// The outcome counters summed over CPUs, index: a `first_segment::FIRST_*` code.
    pub fn bind_first_counts(&self) -> Result<Vec<u64>, EbpfError> {
        let map = self.ebpf.map(BIND_FIRST_COUNTS_MAP).ok_or(EbpfError::MissingMap(BIND_FIRST_COUNTS_MAP))?;
        let c: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map).map_err(|source| EbpfError::Map { map: BIND_FIRST_COUNTS_MAP, source })?;
        (0..FIRST_COUNTS)
            .map(|i| {
                c.get(&i, 0)
                    .map(|v| v.iter().sum())
                    .map_err(|source| EbpfError::Map { map: BIND_FIRST_COUNTS_MAP, source })
            })
            .collect()
    }

    /// The last segment the program decided on (not a conntrack hit).
    pub fn bind_first_last(&self) -> Result<FirstResult, EbpfError> {
        let map = self.ebpf.map(BIND_FIRST_LAST_MAP).ok_or(EbpfError::MissingMap(BIND_FIRST_LAST_MAP))?;
        let a: Array<_, FirstResult> =
            Array::try_from(map).map_err(|source| EbpfError::Map { map: BIND_FIRST_LAST_MAP, source })?;
        a.get(&0, 0).map_err(|source| EbpfError::Map { map: BIND_FIRST_LAST_MAP, source })
    }
}
