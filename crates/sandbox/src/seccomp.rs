//! The seccomp filter every process in a box runs under.
//!
//! A deny list on top of namespaces, capabilities and an unprivileged uid: it closes the kernel
//! interfaces that sandbox escapes have historically gone through, those that reach state shared
//! with other boxes (the host's AIO capacity, live notifications of accesses to the read-only files
//! every box shares), and others that no language needs. `docs/security.md` gives each call and
//! why. Denied calls fail with `EPERM` so programs see an ordinary error; `clone3` fails with
//! `ENOSYS` because its flags cannot be inspected and libc then falls back to `clone`, whose
//! namespace flags the filter does check; inotify fails with `ENOSYS` too, as on a kernel built
//! without it, which file watchers answer by polling. A third, hand-written filter refuses the x32
//! ABI (syscall numbers with bit 30 set), which `seccompiler` does not cover; 32-bit `int 0x80`
//! calls carry another audit arch and are killed by `seccompiler`'s arch check.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Failure to build or install the filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the seccomp filter failed: {0}")]
    Build(String),
    #[error("installing the seccomp filter failed: {0}")]
    Install(String),
}

/// `io_pgetevents`, which `libc` does not name.
#[cfg(target_arch = "x86_64")]
const SYS_IO_PGETEVENTS: libc::c_long = 333;
#[cfg(target_arch = "aarch64")]
const SYS_IO_PGETEVENTS: libc::c_long = 292;

/// `cachestat`, which `libc` does not name.
#[cfg(target_arch = "x86_64")]
const SYS_CACHESTAT: libc::c_long = 451;
#[cfg(target_arch = "aarch64")]
const SYS_CACHESTAT: libc::c_long = 451;

/// System calls a box never gets.
const DENIED: &[libc::c_long] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_process_mrelease,
    libc::SYS_kcmp,
    libc::SYS_pidfd_getfd,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_userfaultfd,
    libc::SYS_memfd_secret,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_setup,
    libc::SYS_io_submit,
    libc::SYS_io_getevents,
    SYS_IO_PGETEVENTS,
    libc::SYS_io_cancel,
    libc::SYS_io_destroy,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_lookup_dcookie,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_syslog,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_vhangup,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_fanotify_init,
    libc::SYS_fanotify_mark,
    SYS_CACHESTAT,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_nfsservctl,
];

/// System calls that fail with `ENOSYS`: `clone3` (see the module doc) and inotify, whose watches
/// on the read-only files every box shares (`/usr`, toolchains, the compile cache) would report
/// live which files other boxes open. A kernel without inotify answers the same, and file
/// watchers fall back to polling.
const UNIMPLEMENTED: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_inotify_init,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
];

/// Socket families a box may not open: raw packets, VM sockets and netlink.
const DENIED_SOCKET_FAMILIES: &[libc::c_int] = &[libc::AF_PACKET, libc::AF_VSOCK, libc::AF_NETLINK];

/// `clone` flags that would create namespaces.
const NAMESPACE_FLAGS: &[libc::c_int] = &[
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNS,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

fn build_err(e: impl std::fmt::Display) -> SeccompError {
    SeccompError::Build(e.to_string())
}

/// A condition on a 32-bit argument (`int`, `unsigned int`): the kernel ignores the upper half of
/// the register, so the filter must too, or a program could set it to slip past.
fn dword(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(build_err)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, SeccompError> {
    SeccompRule::new(conditions).map_err(build_err)
}

fn arg0_equals(value: u64) -> Result<SeccompRule, SeccompError> {
    let cond = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(build_err)?;
    SeccompRule::new(vec![cond]).map_err(build_err)
}

fn arg0_has_bits(bits: u64) -> Result<SeccompRule, SeccompError> {
    let cond = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(bits),
        bits,
    )
    .map_err(build_err)?;
    SeccompRule::new(vec![cond]).map_err(build_err)
}

/// The filters to install, in order. Build them once; installing is one `prctl` each.
pub fn build_filters() -> Result<Vec<BpfProgram>, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(build_err)?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for &nr in DENIED {
        rules.insert(nr, Vec::new());
    }
    let families = DENIED_SOCKET_FAMILIES
        .iter()
        .map(|&f| arg0_equals(f as u64))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_socket, families);
    let ns_flags = NAMESPACE_FLAGS
        .iter()
        .map(|&f| arg0_has_bits(f as u64))
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, ns_flags);
    // Ordinary filters stay allowed (a program may restrict itself further, and the strictest
    // action of all filters wins); a listener for user notification is not.
    rules.insert(
        libc::SYS_seccomp,
        vec![rule(vec![
            dword(0, SeccompCmpOp::Eq, libc::SECCOMP_SET_MODE_FILTER as u64)?,
            dword(
                1,
                SeccompCmpOp::MaskedEq(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER),
                libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            )?,
        ])?],
    );
    // dnotify reports reads in a watched directory, like inotify.
    rules.insert(
        libc::SYS_fcntl,
        vec![rule(vec![dword(
            1,
            SeccompCmpOp::Eq,
            libc::F_NOTIFY as u64,
        )?])?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(build_err)?;
    let deny: BpfProgram = deny.try_into().map_err(build_err)?;

    let unimplemented = UNIMPLEMENTED.iter().map(|&nr| (nr, Vec::new())).collect();
    let unimplemented = SeccompFilter::new(
        unimplemented,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(build_err)?;
    let unimplemented: BpfProgram = unimplemented.try_into().map_err(build_err)?;

    Ok(vec![x32_filter(), deny, unimplemented])
}

/// Refuses x32 system calls: `nr >= 0x4000_0000` returns `ENOSYS`.
fn x32_filter() -> BpfProgram {
    use seccompiler::sock_filter;
    // BPF_LD | BPF_W | BPF_ABS, BPF_JMP | BPF_JGE | BPF_K, BPF_RET | BPF_K.
    const LD_W_ABS: u16 = 0x20;
    const JGE_K: u16 = 0x35;
    const RET_K: u16 = 0x06;
    vec![
        sock_filter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        sock_filter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

/// Installs the filters on the calling thread. `no_new_privs` must already be set.
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter).map_err(|e| SeccompError::Install(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_build() {
        let filters = super::build_filters().unwrap();
        assert_eq!(filters.len(), 3);
        assert!(filters.iter().all(|f| !f.is_empty()));
    }
}
