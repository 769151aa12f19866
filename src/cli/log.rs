//! Verbose logging: `-v` (info), `-vv` (debug), `-vvv` (trace), or the
//! `PSK_LOG` environment variable.
//!
//! Logs go to stderr, never stdout: stdout carries plans, JSON and the
//! PSKs `show` prints on request, and must stay byte-for-byte what the
//! formats promise. Only psk's own events are shown, never a dependency's:
//! psk controls what its events hold (no body, header, PSK or credential;
//! URLs as paths below the base URL), and it cannot vouch for a library's
//! trace output. Off unless asked, so psk's usual stderr does not change.

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

/// The environment variable that sets the level when no `-v` is given.
pub const ENV: &str = "PSK_LOG";

/// The level from `-v` flags, else from `PSK_LOG`, else off.
pub fn level(verbose: u8, env: Option<&str>) -> Result<LevelFilter, String> {
    if verbose > 0 {
        return Ok(match verbose {
            1 => LevelFilter::INFO,
            2 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        });
    }
    let Some(text) = env.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(LevelFilter::OFF);
    };
    match text.to_ascii_lowercase().as_str() {
        "off" | "0" => Ok(LevelFilter::OFF),
        "error" => Ok(LevelFilter::ERROR),
        "warn" => Ok(LevelFilter::WARN),
        "info" | "1" => Ok(LevelFilter::INFO),
        "debug" | "2" => Ok(LevelFilter::DEBUG),
        "trace" | "3" => Ok(LevelFilter::TRACE),
        _ => Err(format!(
            "{ENV}=`{text}` is not a log level; use off, error, warn, info, debug or trace (or -v, -vv, -vvv)"
        )),
    }
}

/// Installs the stderr logger for psk's own events at `level`.
pub fn init(level: LevelFilter) {
    if level == LevelFilter::OFF {
        return;
    }
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(Targets::new().with_target("psk", level));
    // Only fails when a logger is already installed (a test harness).
    let _ = tracing_subscriber::registry().with(layer).try_init();
    tracing::debug!(
        version = env!("CARGO_PKG_VERSION"),
        level = %level,
        "psk logging started"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_environment() {
        assert_eq!(level(0, None), Ok(LevelFilter::OFF));
        assert_eq!(level(1, Some("off")), Ok(LevelFilter::INFO));
        assert_eq!(level(2, None), Ok(LevelFilter::DEBUG));
        assert_eq!(level(3, None), Ok(LevelFilter::TRACE));
        assert_eq!(level(9, None), Ok(LevelFilter::TRACE));
        assert_eq!(level(0, Some(" Debug ")), Ok(LevelFilter::DEBUG));
        assert_eq!(level(0, Some("")), Ok(LevelFilter::OFF));
        let e = level(0, Some("loud")).unwrap_err();
        assert!(e.contains("PSK_LOG=`loud` is not a log level"), "{e}");
    }
}
