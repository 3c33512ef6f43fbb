//! The process's own CPU time and resident memory (Linux).

use rustix::time::{clock_gettime, ClockId};

/// CPU time the process used, user and system, in seconds.
pub fn cpu_seconds() -> f64 {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// Resident memory in bytes (`VmRSS` of `/proc/self/status`; 0 where there is none).
pub fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_running_process_has_cpu_time_and_memory() {
        let spin: u64 = (0..1_000_000u64).map(std::hint::black_box).sum();
        assert!(spin > 0);
        assert!(super::cpu_seconds() > 0.0);
        assert!(super::resident_bytes() > 1 << 20);
    }
}
