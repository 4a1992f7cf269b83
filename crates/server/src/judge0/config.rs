//! The Judge0 door's settings (the `[judge0]` section of the configuration file): the defaults
//! and maxima of a submission's limits, with Judge0 CE 1.13.1's own defaults. The engine's limits
//! still hold: a maximum above what the engine allows is lowered to it when the door starts
//! (`Judge0Config::within`), and `GET /config_info` reports what is in force.

use serde::{Deserialize, Serialize};

/// The Judge0 front door's settings. Times are in seconds, sizes in kilobytes, as in Judge0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Judge0Config {
    /// CPU time a submission gets when it asks for none, and the most it may ask for.
    pub cpu_time_limit: f64,
    /// The most a submission may ask for.
    pub max_cpu_time_limit: f64,
    /// CPU time past `cpu_time_limit` before the program is stopped (its time is still reported
    /// as over the limit).
    pub cpu_extra_time: f64,
    /// The most a submission may ask for.
    pub max_cpu_extra_time: f64,
    /// Wall-clock time of a run.
    pub wall_time_limit: f64,
    /// The most a submission may ask for.
    pub max_wall_time_limit: f64,
    /// Memory of a run, in KB.
    pub memory_limit: u64,
    /// The most a submission may ask for.
    pub max_memory_limit: u64,
    /// Stack size, in KB (validated; the box's own stack limit applies).
    pub stack_limit: u64,
    /// The most a submission may ask for.
    pub max_stack_limit: u64,
    /// Processes and threads (validated; the box's own process limit applies).
    pub max_processes_and_or_threads: u64,
    /// The most a submission may ask for.
    pub max_max_processes_and_or_threads: u64,
    /// Largest file the program may write, in KB.
    pub max_file_size: u64,
    /// The most a submission may ask for.
    pub max_max_file_size: u64,
    /// Runs of one submission (each in a fresh box).
    pub number_of_runs: u64,
    /// The most a submission may ask for.
    pub max_number_of_runs: u64,
    /// The most bytes (in KB) `additional_files` may unpack to.
    pub max_extract_size: u64,
    /// The most submissions in one batch.
    pub max_submission_batch_size: usize,
    /// Whether stderr goes to stdout when a submission does not say.
    pub redirect_stderr_to_stdout: bool,
}

impl Default for Judge0Config {
    fn default() -> Self {
        Judge0Config {
            cpu_time_limit: 5.0,
            max_cpu_time_limit: 15.0,
            cpu_extra_time: 1.0,
            max_cpu_extra_time: 5.0,
            wall_time_limit: 10.0,
            max_wall_time_limit: 20.0,
            memory_limit: 128_000,
            max_memory_limit: 512_000,
            stack_limit: 64_000,
            max_stack_limit: 128_000,
            max_processes_and_or_threads: 60,
            max_max_processes_and_or_threads: 120,
            max_file_size: 1024,
            max_max_file_size: 4096,
            number_of_runs: 1,
            max_number_of_runs: 20,
            max_extract_size: 10_240,
            max_submission_batch_size: 20,
            redirect_stderr_to_stdout: false,
        }
    }
}

impl Judge0Config {
    /// Checks that every default is positive and within its maximum; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        let times = [
            (
                "cpu_time_limit",
                self.cpu_time_limit,
                self.max_cpu_time_limit,
            ),
            (
                "cpu_extra_time",
                self.cpu_extra_time,
                self.max_cpu_extra_time,
            ),
            (
                "wall_time_limit",
                self.wall_time_limit,
                self.max_wall_time_limit,
            ),
        ];
        for (key, default, max) in times {
            if !(default.is_finite() && max.is_finite() && default >= 0.0 && max > 0.0) {
                return Err(format!(
                    "judge0.{key}: it and max_{key} must be positive numbers of seconds"
                ));
            }
            if default > max {
                return Err(format!(
                    "judge0.{key}: {default} is above max_{key} ({max})"
                ));
            }
        }
        if self.wall_time_limit < 1.0 {
            return Err("judge0.wall_time_limit: must be at least 1 second".into());
        }
        let sizes = [
            ("memory_limit", self.memory_limit, self.max_memory_limit),
            ("stack_limit", self.stack_limit, self.max_stack_limit),
            (
                "max_processes_and_or_threads",
                self.max_processes_and_or_threads,
                self.max_max_processes_and_or_threads,
            ),
            ("max_file_size", self.max_file_size, self.max_max_file_size),
            (
                "number_of_runs",
                self.number_of_runs,
                self.max_number_of_runs,
            ),
        ];
        for (key, default, max) in sizes {
            if default == 0 || default > max {
                return Err(format!(
                    "judge0.{key}: must be at least 1 and at most its maximum ({max})"
                ));
            }
        }
        if self.max_submission_batch_size == 0 {
            return Err("judge0.max_submission_batch_size: must be at least 1".into());
        }
        if self.max_extract_size == 0 {
            return Err("judge0.max_extract_size: must be at least 1".into());
        }
        Ok(())
    }

    /// These settings with every maximum (and default) lowered to what the engine allows: the
    /// longest run, the most memory (in KB) and the largest file (in KB).
    pub(crate) fn within(&self, max_run_secs: f64, max_memory_kb: u64, max_file_kb: u64) -> Self {
        let mut c = self.clone();
        c.max_wall_time_limit = c.max_wall_time_limit.min(max_run_secs);
        c.wall_time_limit = c.wall_time_limit.min(c.max_wall_time_limit);
        // The CPU limit and its extra time together are one engine limit.
        c.max_cpu_time_limit = c.max_cpu_time_limit.min(max_run_secs);
        c.max_cpu_extra_time = c
            .max_cpu_extra_time
            .min((max_run_secs - c.max_cpu_time_limit).max(0.0));
        c.cpu_time_limit = c.cpu_time_limit.min(c.max_cpu_time_limit);
        c.cpu_extra_time = c.cpu_extra_time.min(c.max_cpu_extra_time);
        c.max_memory_limit = c.max_memory_limit.min(max_memory_kb);
        c.memory_limit = c.memory_limit.min(c.max_memory_limit);
        c.max_max_file_size = c.max_max_file_size.min(max_file_kb);
        c.max_file_size = c.max_file_size.min(c.max_max_file_size);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_judge0s_and_valid() {
        let config = Judge0Config::default();
        config.validate().expect("valid");
        assert_eq!(config.max_submission_batch_size, 20);
        assert_eq!(config.max_memory_limit, 512_000);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let config = Judge0Config {
            cpu_time_limit: 30.0,
            ..Judge0Config::default()
        };
        let error = config.validate().expect_err("above its maximum");
        assert!(error.contains("judge0.cpu_time_limit"), "{error}");
        let config = Judge0Config {
            number_of_runs: 0,
            ..Judge0Config::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn maxima_are_lowered_to_the_engines() {
        let c = Judge0Config::default().within(8.0, 256_000, 64);
        assert_eq!(c.max_wall_time_limit, 8.0);
        assert_eq!(c.wall_time_limit, 8.0);
        assert_eq!(c.max_cpu_time_limit, 8.0);
        assert_eq!(c.max_cpu_extra_time, 0.0);
        assert_eq!(c.max_memory_limit, 256_000);
        assert_eq!(c.memory_limit, 128_000);
        assert_eq!(c.max_max_file_size, 64);
    }
}
