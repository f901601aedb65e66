//! Facts about the machine and the source tree that a result file records, and the CPU time
//! of named threads (read from /proc, so it works for this process and for another one).

use std::path::Path;
use std::process::Command;

/// Nanoseconds of CPU time used so far by the threads of `pid` whose name starts with
/// `prefix` (`shard-` for a router's shards). `None` when /proc cannot tell.
pub fn thread_cpu_ns(pid: u32, prefix: &str) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    let mut found = false;
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        // schedstat: time on CPU (ns), time waiting to run (ns), timeslices.
        let stat = std::fs::read_to_string(dir.join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
        found = true;
    }
    found.then_some(total)
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
                thread_cpu_ns(std::process::id(), "cputest-").unwrap_or(0)
            })
            .unwrap();
        let ns = t.join().unwrap();
        assert!(
            ns >= 10_000_000,
            "a 30 ms busy loop shows at least 10 ms: {ns}"
        );
        assert_eq!(thread_cpu_ns(std::process::id(), "no-such-thread-"), None);
    }
}
