//! The standard `process_*` metrics (the names every Prometheus client library uses, so
//! existing dashboards work): CPU seconds, resident memory, open file descriptors against
//! their limit, start time. Read from `/proc/self` at scrape time; elsewhere they are left out.

use std::fmt::Write as _;

/// Bytes per page in `/proc/self/statm` (4 KiB on every Linux architecture this runs on).
const PAGE_SIZE: u64 = 4096;
/// Clock ticks per second in `/proc/self/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// One scrape's reading of the process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// File descriptors open now (connections, listeners, files).
    pub open_fds: Option<u64>,
    /// The soft `RLIMIT_NOFILE`: where accepts start failing.
    pub max_fds: Option<u64>,
}

impl ProcessStats {
    /// Reads `/proc/self`; whatever cannot be read stays `None`.
    pub fn read() -> ProcessStats {
        let file = |name: &str| std::fs::read_to_string(format!("/proc/self/{name}")).ok();
        ProcessStats {
            cpu_seconds: file("stat").as_deref().and_then(cpu_seconds),
            resident_bytes: file("statm").as_deref().and_then(resident_bytes),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|entries| entries.count() as u64),
            max_fds: file("limits").as_deref().and_then(max_fds),
        }
    }

    /// The Prometheus text for what was read.
    pub fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, kind: &str, help: &str, value: Option<f64>| {
            if let Some(value) = value {
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
                let _ = writeln!(out, "{name} {value}");
            }
        };
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|b| b as f64),
        );
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|n| n as f64),
        );
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|n| n as f64),
        );
    }
}

/// utime + stime (fields 14 and 15) of `/proc/self/stat`, after the `(comm)` field, which
/// may itself contain spaces and parentheses.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((user + system) as f64 / TICKS_PER_SECOND)
}

/// The second field of `/proc/self/statm`: resident pages.
fn resident_bytes(statm: &str) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

/// The soft limit on the `Max open files` line of `/proc/self/limits`.
fn max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_parsed() {
        let stat = "4242 (sse edge) (x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 130 0 0 20 0";
        assert_eq!(cpu_seconds(stat), Some(3.8));
        assert_eq!(resident_bytes("5000 1200 300 1 0 900 0"), Some(1200 * 4096));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63379                63379                processes \n\
                      Max open files            1048576              1048576              files     \n";
        assert_eq!(max_fds(limits), Some(1_048_576));
        assert_eq!(cpu_seconds("garbage"), None);
        assert_eq!(max_fds(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_can_be_read() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.is_some_and(|b| b > 0), "{stats:?}");
        assert!(stats.open_fds.is_some_and(|n| n > 0), "{stats:?}");
        assert!(stats.max_fds.is_some_and(|n| n > 0), "{stats:?}");
        assert!(stats.cpu_seconds.is_some(), "{stats:?}");
        let mut text = String::new();
        stats.render(&mut text);
        assert!(text.contains("# TYPE process_open_fds gauge\nprocess_open_fds "));
    }
}
