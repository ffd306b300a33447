//! What a process costs, read from `/proc`: CPU seconds, peak memory; and dockerd's pid.

use anyhow::{bail, Context, Result};

/// User + system CPU seconds a process used so far.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

pub use logarithm_tests::load::peak_rss_mib;

/// dockerd's pid (the engine the bench's containers run on).
pub fn dockerd_pid() -> Result<u32> {
    for dir in std::fs::read_dir("/proc")? {
        let dir = dir?;
        let Ok(pid) = dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(dir.path().join("comm")).is_ok_and(|c| c.trim() == "dockerd") {
            return Ok(pid);
        }
    }
    bail!("no dockerd process found")
}
