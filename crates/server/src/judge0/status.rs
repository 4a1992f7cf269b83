//! Judge0's statuses 1–14, and the verdict of a finished run: the engine's typed outcome read the
//! way Judge0 reads isolate's (time limit → 5, a signal → 7–10 or 12, a non-zero exit → 11,
//! otherwise the output against `expected_output` → 3 or 4).

use std::time::Duration;

use codebeaker_engine::{ExecutionRecord, ExecutionState};
use codebeaker_sandbox::Verdict;
use serde::Serialize;

/// A Judge0 status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Status(pub u8);

impl Status {
    pub const IN_QUEUE: Status = Status(1);
    pub const PROCESSING: Status = Status(2);
    pub const ACCEPTED: Status = Status(3);
    pub const WRONG_ANSWER: Status = Status(4);
    pub const TIME_LIMIT: Status = Status(5);
    pub const COMPILATION_ERROR: Status = Status(6);
    pub const SIGSEGV: Status = Status(7);
    pub const SIGXFSZ: Status = Status(8);
    pub const SIGFPE: Status = Status(9);
    pub const SIGABRT: Status = Status(10);
    pub const NZEC: Status = Status(11);
    pub const OTHER: Status = Status(12);
    pub const INTERNAL_ERROR: Status = Status(13);

    /// Judge0's words for it.
    pub fn description(self) -> &'static str {
        STATUSES
            .iter()
            .find(|(id, _)| *id == self.0)
            .map_or("Internal Error", |(_, name)| name)
    }

    /// The runtime error of a program killed by `signal` (Judge0's mapping).
    fn of_signal(signal: i32) -> Status {
        match signal {
            11 => Status::SIGSEGV,
            25 => Status::SIGXFSZ,
            8 => Status::SIGFPE,
            6 => Status::SIGABRT,
            _ => Status::OTHER,
        }
    }

    /// Whether the submission is still queued or running.
    pub fn pending(self) -> bool {
        self == Status::IN_QUEUE || self == Status::PROCESSING
    }
}

/// Every status, as `GET /statuses` lists them.
pub(crate) const STATUSES: [(u8, &str); 14] = [
    (1, "In Queue"),
    (2, "Processing"),
    (3, "Accepted"),
    (4, "Wrong Answer"),
    (5, "Time Limit Exceeded"),
    (6, "Compilation Error"),
    (7, "Runtime Error (SIGSEGV)"),
    (8, "Runtime Error (SIGXFSZ)"),
    (9, "Runtime Error (SIGFPE)"),
    (10, "Runtime Error (SIGABRT)"),
    (11, "Runtime Error (NZEC)"),
    (12, "Runtime Error (Other)"),
    (13, "Internal Error"),
    (14, "Exec Format Error"),
];

/// `{id, description}`, as Judge0 writes a status.
#[derive(Debug, Serialize)]
pub(crate) struct StatusJson {
    pub id: u8,
    pub description: &'static str,
}

impl From<Status> for StatusJson {
    fn from(status: Status) -> Self {
        StatusJson {
            id: status.0,
            description: status.description(),
        }
    }
}

/// The limits a verdict is judged against (besides the engine's, which stop the run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Judged {
    pub cpu_time_limit: Duration,
    pub wall_time_limit: Duration,
}

/// A run's verdict, with the signal that ended it and the message Judge0 would give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdicted {
    pub status: Status,
    pub signal: Option<i32>,
    pub message: Option<String>,
}

/// The verdict of the record so far. `expected` is the submission's `expected_output`.
pub(crate) fn verdict(
    record: &ExecutionRecord,
    expected: Option<&str>,
    judged: Judged,
) -> Verdicted {
    let plain = |status| Verdicted {
        status,
        signal: None,
        message: None,
    };
    match record.status {
        ExecutionState::Queued => return plain(Status::IN_QUEUE),
        ExecutionState::Running => return plain(Status::PROCESSING),
        ExecutionState::Completed | ExecutionState::Failed => {}
    }
    let over_time = record.cpu_time.is_some_and(|t| t > judged.cpu_time_limit)
        || record.wall_time.is_some_and(|t| t > judged.wall_time_limit);
    let signal = record.signal;
    let with = |status, signal, message: &str| Verdicted {
        status,
        signal,
        message: Some(message.to_string()),
    };
    match record.outcome {
        None | Some(Verdict::InternalError) => Verdicted {
            status: Status::INTERNAL_ERROR,
            signal: None,
            message: record.error.clone(),
        },
        Some(Verdict::CompileError) => plain(Status::COMPILATION_ERROR),
        Some(Verdict::Timeout) => with(Status::TIME_LIMIT, signal, "Time limit exceeded"),
        _ if over_time => with(Status::TIME_LIMIT, signal, "Time limit exceeded"),
        // Killed by the cgroup's memory limit: isolate sees SIGKILL.
        Some(Verdict::MemoryLimit) => with(Status::OTHER, Some(9), "Memory limit exceeded"),
        // Writing past the output bound: what RLIMIT_FSIZE on Judge0's output files does.
        Some(Verdict::OutputLimit) => with(Status::SIGXFSZ, Some(25), "Output limit exceeded"),
        Some(Verdict::Killed) => with(Status::OTHER, signal.or(Some(9)), "Killed"),
        Some(Verdict::RuntimeError) => match (signal, record.exit_code) {
            (Some(s), _) => with(
                Status::of_signal(s),
                Some(s),
                &format!("Caught fatal signal {s}"),
            ),
            (None, code) => with(
                Status::NZEC,
                None,
                &format!("Exited with error status {}", code.unwrap_or(1)),
            ),
        },
        Some(Verdict::Ok) => match expected {
            Some(expected) if trimmed(expected) != trimmed(&record.stdout) => {
                plain(Status::WRONG_ANSWER)
            }
            _ => plain(Status::ACCEPTED),
        },
    }
}

/// Text with trailing whitespace removed from every line and from its end (Judge0's comparison).
fn trimmed(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').map(str::trim_end).collect();
    lines.join("\n").trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn record(
        outcome: Verdict,
        exit: Option<i32>,
        signal: Option<i32>,
        out: &str,
    ) -> ExecutionRecord {
        ExecutionRecord {
            id: "t".into(),
            status: ExecutionState::Completed,
            exit_code: exit,
            stdout: out.into(),
            stderr: String::new(),
            timed_out: outcome == Verdict::Timeout,
            truncated: false,
            outcome: Some(outcome),
            error: None,
            output: None,
            signal,
            cpu_time: Some(Duration::from_millis(1)),
            wall_time: Some(Duration::from_millis(1)),
            peak_memory_bytes: None,
            created_at: SystemTime::now(),
            finished_at: Some(SystemTime::now()),
            message: None,
            compile: None,
        }
    }

    const LIMITS: Judged = Judged {
        cpu_time_limit: Duration::from_secs(1),
        wall_time_limit: Duration::from_secs(2),
    };

    fn status(r: &ExecutionRecord, expected: Option<&str>) -> u8 {
        verdict(r, expected, LIMITS).status.0
    }

    #[test]
    fn output_is_compared_after_trimming_trailing_whitespace() {
        let ok = record(Verdict::Ok, Some(0), None, "1 2  \n3\n\n");
        assert_eq!(status(&ok, None), 3);
        assert_eq!(status(&ok, Some("1 2\n3")), 3);
        assert_eq!(status(&ok, Some("1 2\n 3")), 4);
        assert_eq!(status(&ok, Some("1 2\n4\n")), 4);
    }

    #[test]
    fn signals_and_exit_codes_map_as_in_judge0() {
        for (signal, id) in [(11, 7), (25, 8), (8, 9), (6, 10), (9, 12), (15, 12)] {
            let r = record(Verdict::RuntimeError, None, Some(signal), "");
            assert_eq!(status(&r, None), id, "signal {signal}");
        }
        let nzec = record(Verdict::RuntimeError, Some(3), None, "");
        let v = verdict(&nzec, None, LIMITS);
        assert_eq!(v.status.0, 11);
        assert_eq!(v.message.as_deref(), Some("Exited with error status 3"));
    }

    #[test]
    fn limits_compile_errors_and_failures() {
        assert_eq!(
            status(&record(Verdict::Timeout, None, Some(9), ""), None),
            5
        );
        assert_eq!(
            status(&record(Verdict::CompileError, Some(1), None, ""), None),
            6
        );
        assert_eq!(
            status(&record(Verdict::InternalError, None, None, ""), None),
            13
        );
        let mut slow = record(Verdict::Ok, Some(0), None, "");
        slow.cpu_time = Some(Duration::from_millis(1500));
        assert_eq!(
            status(&slow, None),
            5,
            "over the CPU limit within its extra time"
        );
        let mut queued = record(Verdict::Ok, None, None, "");
        queued.status = ExecutionState::Queued;
        assert_eq!(status(&queued, None), 1);
        queued.status = ExecutionState::Running;
        assert_eq!(status(&queued, None), 2);
    }

    #[test]
    fn every_status_has_its_description() {
        assert_eq!(Status(6).description(), "Compilation Error");
        assert_eq!(Status(14).description(), "Exec Format Error");
        assert_eq!(STATUSES.len(), 14);
    }
}
