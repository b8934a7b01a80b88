//! `log` records and panic messages go to Envoy's log through the host, never panicking
//! themselves (the proxy-wasm SDK's logger unwraps the host's status).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::abi;

struct HostLogger;

static LOGGER: HostLogger = HostLogger;
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the logger (Info and above) and a panic hook that logs the panic as critical.
/// `name` prefixes nothing: Envoy's wasm log lines already name the plugin.
pub fn install(_name: &str) {
    if INSTALLED.swap(true, Ordering::Relaxed) {
        return;
    }
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(5, &info.to_string());
    }));
}

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => 0,
            log::Level::Debug => 1,
            log::Level::Info => 2,
            log::Level::Warn => 3,
            log::Level::Error => 4,
        };
        // A log line that cannot be written is dropped.
        let _ = abi::log(level, &record.args().to_string());
    }

    fn flush(&self) {}
}
