//! Facts about the machine and the source tree that a result file records, and the CPU time
//! of given threads (read from /proc, so it works for this process and for another one).

use std::path::Path;
use std::process::Command;

/// The ids of the threads of `pid` whose name starts with `prefix` (`shard-` for a router).
pub fn named_threads(pid: u32, prefix: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|n| n.starts_with(prefix))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// Nanoseconds of CPU time used so far by threads `tids` of process `pid`, from
/// /proc/PID/task/TID/schedstat (time on CPU, time waiting to run, timeslices). `None` when
/// /proc cannot tell for one of them.
pub fn threads_cpu_ns(pid: u32, tids: &[i32]) -> Option<u64> {
    if tids.is_empty() {
        return None;
    }
    tids.iter().try_fold(0u64, |total, tid| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
        Some(total + stat.split_whitespace().next()?.parse::<u64>().ok()?)
    })
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The commit the tree is at and whether it has uncommitted changes; `None` outside git.
pub fn commit(dir: &Path) -> Option<(String, bool)> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let id = git(&["rev-parse", "HEAD"])?;
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(true);
    Some((id, dirty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_a_busy_named_thread_is_visible() {
        let t = std::thread::Builder::new()
            .name("cputest-1".into())
            .spawn(|| {
                let start = std::time::Instant::now();
                let mut x = 0u64;
                while start.elapsed() < std::time::Duration::from_millis(30) {
                    x = x.wrapping_mul(31).wrapping_add(1);
                }
                std::hint::black_box(x);
                let pid = std::process::id();
                let tids = named_threads(pid, "cputest-");
                assert_eq!(tids.len(), 1);
                threads_cpu_ns(pid, &tids).unwrap_or(0)
            })
            .unwrap();
        let ns = t.join().unwrap();
        assert!(
            ns >= 10_000_000,
            "a 30 ms busy loop shows at least 10 ms: {ns}"
        );
        assert!(named_threads(std::process::id(), "no-such-thread-").is_empty());
        assert_eq!(threads_cpu_ns(std::process::id(), &[]), None);
    }
}
