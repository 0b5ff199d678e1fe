//! The standard process metrics (`process_*`), read from `/proc/self` at each scrape: CPU time to
//! the clock tick (the prometheus crate's own collector rounds it down to whole seconds, so a
//! gateway at low load showed 0 and `rate()` said nothing), resident and virtual memory, open
//! and maximum file descriptors, threads, and the start time.

use prometheus::core::{Collector, Desc};
use prometheus::{proto, Counter, Gauge, IntGauge, Opts};

/// Clock ticks per second in `/proc` (`USER_HZ`): 100 on every Linux architecture (the kernel
/// converts to it for user space; Prometheus's own Go `procfs` uses the same constant). Read with
/// no `sysconf`, which would need unsafe code.
const USER_HZ: f64 = 100.0;

/// What `/proc/self/stat` says, in the units the metrics use.
#[derive(Debug, PartialEq)]
struct Stat {
    cpu_seconds: f64,
    threads: i64,
    /// Since boot.
    start_seconds: f64,
    virtual_bytes: i64,
}

/// `/proc/self/stat`'s fields after the command name (which may hold spaces and parentheses,
/// so the fields start after its last `)`).
fn parse_stat(text: &str) -> Option<Stat> {
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 of proc(5): utime is 14, stime 15, num_threads 20, starttime 22, vsize 23.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        threads: field(20)? as i64,
        start_seconds: field(22)? as f64 / USER_HZ,
        virtual_bytes: field(23)? as i64,
    })
}

/// The value of a `Name:   N kB` line of `/proc/self/status` (or `btime N` of `/proc/stat`).
fn line_value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `process_*` families, collected at each scrape.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    cpu: Counter,
    resident: IntGauge,
    virtual_bytes: IntGauge,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: Gauge,
    threads: IntGauge,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// The collector of this process.
    pub fn new() -> Self {
        let int = |name: &str, help: &str| IntGauge::with_opts(Opts::new(name, help)).expect("a valid metric");
        let cpu = Counter::with_opts(Opts::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        ))
        .expect("a valid metric");
        let start_time = Gauge::with_opts(Opts::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        ))
        .expect("a valid metric");
        let c = ProcessCollector {
            descs: Vec::new(),
            cpu,
            resident: int("process_resident_memory_bytes", "Resident memory size in bytes."),
            virtual_bytes: int("process_virtual_memory_bytes", "Virtual memory size in bytes."),
            open_fds: int("process_open_fds", "Number of open file descriptors."),
            max_fds: int("process_max_fds", "Maximum number of open file descriptors."),
            start_time,
            threads: int("process_threads", "Number of OS threads in the process."),
        };
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|t| line_value(&t, "btime"));
        let stat = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t));
        if let (Some(boot), Some(stat)) = (boot, stat) {
            c.start_time.set(boot as f64 + stat.start_seconds);
        }
        let descs = c.collectors().iter().flat_map(|m| m.desc()).cloned().collect();
        ProcessCollector { descs, ..c }
    }

    fn collectors(&self) -> [&dyn Collector; 7] {
        [
            &self.cpu,
            &self.open_fds,
            &self.max_fds,
            &self.virtual_bytes,
            &self.resident,
            &self.start_time,
            &self.threads,
        ]
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            // A counter only goes up: add what was used since the last scrape.
            let delta = stat.cpu_seconds - self.cpu.get();
            if delta > 0.0 {
                self.cpu.inc_by(delta);
            }
            self.threads.set(stat.threads);
            self.virtual_bytes.set(stat.virtual_bytes);
        }
        if let Some(kib) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| line_value(&t, "VmRSS:"))
        {
            self.resident.set(kib as i64 * 1024);
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(fds.count() as i64);
        }
        if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) {
            self.max_fds.set(i64::try_from(soft).unwrap_or(i64::MAX));
        }
        self.collectors().iter().flat_map(|m| m.collect()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 83 ticks of CPU are 0.83 s, not 0 (the prometheus crate's collector said 0); a command
    /// name with spaces and a `)` does not shift the fields.
    #[test]
    fn cpu_seconds_keep_their_fraction() {
        let line = "4242 (douyin gw) x)) S 1 4242 4242 0 -1 4194560 1207 0 0 0 50 33 0 0 20 0 7 0 \
                    123456 987654321 3000 18446744073709551615 1 1 0 0 0 0 0 4096 17642 0 0 0 17 1 0 0 0 0 0";
        let stat = parse_stat(line).unwrap();
        assert_eq!(
            stat,
            Stat {
                cpu_seconds: 0.83,
                threads: 7,
                start_seconds: 1234.56,
                virtual_bytes: 987654321,
            }
        );
        assert_eq!(parse_stat("4242 (cut short) S 1"), None);
    }

    /// Every standard family, from this process's /proc.
    #[test]
    fn collects_the_seven_families() {
        let c = ProcessCollector::new();
        let names: Vec<String> = c.collect().iter().map(|f| f.name().to_string()).collect();
        assert_eq!(
            names,
            [
                "process_cpu_seconds_total",
                "process_open_fds",
                "process_max_fds",
                "process_virtual_memory_bytes",
                "process_resident_memory_bytes",
                "process_start_time_seconds",
                "process_threads"
            ]
        );
        assert_eq!(c.desc().len(), 7);
        assert!(c.resident.get() > 0 && c.open_fds.get() > 0 && c.threads.get() > 0);
        assert!(c.start_time.get() > 1.6e9, "{}", c.start_time.get());
    }
}
