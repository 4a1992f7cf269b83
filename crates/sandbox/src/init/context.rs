//! What the init knows for every run: the seccomp filters, the box's limits, `/dev/null` and the
//! box's run and worker groups. Shared by cold runs ([`super::run`]) and warm workers
//! ([`super::warm`]).

use std::os::fd::OwnedFd;

use seccompiler::BpfProgram;

use super::groups::{Group, RunGroups};
use crate::limits::BoxLimits;

/// What the init knows for every run.
pub struct Context {
    pub filters: Vec<BpfProgram>,
    pub degraded: bool,
    pub box_limits: BoxLimits,
    /// `/dev/null`, for descriptors a run does not use.
    pub devnull: OwnedFd,
    /// The run and worker groups (`None` when the box has no cgroup).
    pub groups: Option<RunGroups>,
}

impl Context {
    /// The group a run's own processes join.
    pub(crate) fn run_group(&self) -> Option<&Group> {
        self.groups.as_ref().map(|g| &g.run)
    }

    /// The group warm workers join.
    pub(crate) fn workers_group(&self) -> Option<&Group> {
        self.groups.as_ref().map(|g| &g.workers)
    }
}
