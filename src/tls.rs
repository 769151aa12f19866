//! TLS for every HTTP client psk builds (Cloudflare's API, GraphQL, and any
//! store that speaks HTTPS).
//!
//! reqwest is built without a bundled crypto provider so that psk compiles
//! one implementation, *ring*, instead of also building aws-lc (a C library
//! that needs a C toolchain and minutes of compile time on small CI
//! machines). rustls then needs a process-wide provider before the first
//! client is built; [`ensure_provider`] installs it once, and is harmless
//! to call again.

use std::sync::Once;

/// Installs *ring* as rustls' process-wide crypto provider, unless one is
/// installed already (by psk earlier, or by whoever embeds psk's library).
pub fn ensure_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // A race with another installer is the only way this fails,
            // and then a provider is installed either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// A plain client with psk's provider in place: for tests and tools that
/// talk to the sandbox.
pub fn client() -> reqwest::Client {
    ensure_provider();
    reqwest::Client::new()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_client_builds_after_the_provider_is_installed() {
        super::ensure_provider();
        super::ensure_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
        let _ = super::client();
    }
}
