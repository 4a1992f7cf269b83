//! `/proc/<pid>/stat`, read one way for the whole crate: the census of what boxes leave, the
//! cgroup kill's zombie check and the kernel keeper's process tree.

/// What the crate reads from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `D`, `T`, `Z`, ...
    pub(crate) state: char,
    pub(crate) ppid: i32,
    /// When the process started, in clock ticks after boot.
    pub(crate) start_ticks: u64,
}

/// Parses `/proc/<pid>/stat` text (proc(5)). The command name may hold spaces and parentheses,
/// so the fields are counted from the last `)`.
pub(crate) fn parse_stat(stat: &str) -> Option<ProcStat> {
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/<pid>/stat` of `pid`, `None` when it is gone or unreadable.
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_from_the_last_parenthesis() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                state: 'S',
                ppid: 1,
                start_ticks: 98765
            })
        );
        let zombie = "123 (a) b) Z 7 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert_eq!(
            parse_stat(zombie).map(|s| (s.state, s.ppid)),
            Some(('Z', 7))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (short) S 0"), None);
    }

    #[test]
    fn this_process_reads_with_its_parent() {
        let me = read_stat(std::process::id() as i32).expect("our own stat");
        // The main thread's state: the tests run on other threads.
        assert!(me.state.is_ascii_uppercase(), "{me:?}");
        assert_eq!(me.ppid, nix::unistd::getppid().as_raw());
        assert!(read_stat(i32::MAX).is_none());
    }
}
