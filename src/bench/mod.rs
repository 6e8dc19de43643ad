//! `pipeline bench`: measured figures (run from a release build; the machine and
//! thread count are printed with the figures): `data` (prepare times, Criteo
//! streaming), `train` (samples/s of every model), `llm` (forward and adapter
//! steps), `stream` (Criteo-size training in bounded memory). `criteo` writes the
//! synthetic Criteo-format input the data and stream benches read.

pub mod criteo;
pub mod data;
pub mod llm;
pub mod stream;
pub mod train;

/// The machine and build lines every benchmark prints first.
pub(crate) fn print_header() {
    println!("machine: {}", machine());
    println!(
        "build: {}",
        if cfg!(debug_assertions) {
            "debug (figures not representative)"
        } else {
            "release"
        }
    );
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores available")
}

/// Largest peak resident memory of any waited-for child process, bytes.
pub(crate) fn children_peak_rss() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) == 0 {
            (u.ru_maxrss as u64) * 1024
        } else {
            0
        }
    }
}
