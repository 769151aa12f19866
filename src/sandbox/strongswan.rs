//! A real far end: every tunnel's two ends are strongSwan charons.
//!
//! The model in `health` says a tunnel is up when two strings match. That
//! proves psk's ordering, not that an IKE daemon accepts the key psk
//! rotated. Here each tunnel gets a pair of network namespaces joined by a
//! veth link, with documentation addresses (192.0.2.0/24) that exist only
//! inside them: Cloudflare's side (`edge`, 192.0.2.1) runs a charon holding
//! the key the sandbox holds, answering with Cloudflare's documented IKE
//! proposals; the customer's side (`router`, 192.0.2.2) runs a charon whose
//! swanctl directory a delivery writes to, as on a strongSwan-based router.
//!
//! A key change on the edge loads the new key into its charon and ends the
//! IKE SA at once, as the real edge stops accepting the old key. The
//! tunnel's health is read from the edge charon: up while an IKE SA is
//! established, which after the change can only be one authenticated with
//! the new key.
//!
//! Each charon has a private `/run` (the namespace's own mount namespace
//! and a tmpfs), its own `strongswan.conf` and vici socket in the tunnel's
//! directory. Everything is stopped and removed when the [`Fleet`] is
//! dropped.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::tunnel::TunnelKey;

/// The edge's address inside every tunnel's namespaces.
pub const EDGE_ADDR: &str = "192.0.2.1";
/// The router's address inside every tunnel's namespaces.
pub const ROUTER_ADDR: &str = "192.0.2.2";
/// The name of the edge's connection in its charon.
const EDGE_CONN: &str = "cloudflare";

/// Cloudflare's IKE proposals (its "IPsec tunnels" reference): AES-GCM-16
/// with a 256 or 128-bit key, or AES-CBC-256 with SHA2-256; PRF SHA2-256,
/// 384 or 512; DH group 14 or 5.
pub const EDGE_PROPOSALS: &str = "aes256gcm16-prfsha256-prfsha384-prfsha512-modp2048-modp1536,\
aes128gcm16-prfsha256-prfsha384-prfsha512-modp2048-modp1536,\
aes256-sha256-prfsha256-prfsha384-prfsha512-modp2048-modp1536";

/// What the routers propose: the first of Cloudflare's.
const ROUTER_PROPOSALS: &str = "aes256gcm16-prfsha256-modp2048";

/// Where distributions put charon.
const CHARON_PATHS: &[&str] = &[
    "/usr/lib/ipsec/charon",
    "/usr/libexec/ipsec/charon",
    "/usr/lib/strongswan/charon",
    "/usr/libexec/strongswan/charon",
];

/// The subdirectories swanctl reads credentials from; made empty so it
/// does not complain of their absence.
const SWANCTL_SUBDIRS: &[&str] = &[
    "conf.d", "x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private",
    "rsa", "ecdsa", "bliss", "pkcs8", "pkcs12",
];

/// Why the strongSwan far end cannot run, or failed.
#[derive(Debug, thiserror::Error)]
pub enum FarEndError {
    #[error("the strongSwan far end needs {0}")]
    Missing(String),
    #[error("the strongSwan far end: {0}")]
    Failed(String),
}

/// The tunnels' far ends, as real charons. Stopped and removed on drop.
#[derive(Debug)]
pub struct Fleet {
    dir: PathBuf,
    /// Remove `dir` on drop (the sandbox made it).
    owns_dir: bool,
    pairs: BTreeMap<TunnelKey, Pair>,
    stopped: AtomicBool,
}

#[derive(Debug)]
struct Pair {
    edge: Charon,
    router: Charon,
}

/// One charon in its namespace.
#[derive(Debug)]
struct Charon {
    netns: String,
    /// Holds strongswan.conf, the vici socket, the log and `swanctl/`.
    dir: PathBuf,
    process: Mutex<Option<Child>>,
}

/// One tunnel to set up: its key, name and keys on both sides.
pub struct Peer<'a> {
    pub key: &'a TunnelKey,
    pub name: &'a str,
    pub edge_psk: &'a str,
    pub router_psk: &'a str,
}

/// Checks what the far end needs: root (namespaces), `ip`, `swanctl`
/// and charon. Names everything missing at once.
pub fn check_prerequisites() -> Result<PathBuf, FarEndError> {
    let mut missing = Vec::new();
    let root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0);
    if !matches!(root, Ok(true)) {
        missing.push("root (it makes network namespaces): run it as root".to_string());
    }
    for (tool, package) in [("ip", "iproute2"), ("swanctl", "strongswan-swanctl")] {
        if find_on_path(tool).is_none() {
            missing.push(format!(
                "`{tool}` on PATH (Debian: `apt-get install {package}`)"
            ));
        }
    }
    let charon = CHARON_PATHS.iter().map(PathBuf::from).find(|p| p.is_file());
    if charon.is_none() {
        missing.push(format!(
            "strongSwan's charon (looked in {}; Debian: `apt-get install strongswan-charon`)",
            CHARON_PATHS.join(", ")
        ));
    }
    match charon {
        Some(c) if missing.is_empty() => Ok(c),
        _ => Err(FarEndError::Missing(missing.join(", and "))),
    }
}

fn find_on_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

impl Fleet {
    /// Starts a pair of charons per peer under `dir` (a new directory under
    /// the system's temp dir when `None`), each router connected with its
    /// key. Namespaces are named `psk-<random>-<n>e` and `…r`.
    pub fn start(dir: Option<&Path>, peers: &[Peer<'_>]) -> Result<Fleet, FarEndError> {
        let charon = check_prerequisites()?;
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
        let (dir, owns_dir) = match dir {
            Some(d) => (d.to_path_buf(), false),
            None => (
                std::env::temp_dir().join(format!("psk-far-end-{run}")),
                true,
            ),
        };
        let io = |what: &str, e: std::io::Error| FarEndError::Failed(format!("{what}: {e}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| io(&format!("cannot make {}", dir.display()), e))?;
        let mut fleet = Fleet {
            dir: dir.clone(),
            owns_dir,
            pairs: BTreeMap::new(),
            stopped: AtomicBool::new(false),
        };
        for (n, peer) in peers.iter().enumerate() {
            let base = dir.join(&peer.key.tunnel_id);
            let edge_ns = format!("psk-{run}-{n}e");
            let router_ns = format!("psk-{run}-{n}r");
            // Registered before anything exists, so a failure halfway
            // still removes what was made.
            fleet.pairs.insert(
                peer.key.clone(),
                Pair {
                    edge: Charon {
                        netns: edge_ns.clone(),
                        dir: base.join("edge"),
                        process: Mutex::new(None),
                    },
                    router: Charon {
                        netns: router_ns.clone(),
                        dir: base.join("router"),
                        process: Mutex::new(None),
                    },
                },
            );
            link(&edge_ns, &router_ns)?;
            let pair = fleet.pairs.get_mut(peer.key).expect("just inserted");
            let id = remote_id(peer.key);
            pair.edge
                .configure(&edge_conf(&id), EDGE_CONN, &id, peer.edge_psk)?;
            pair.router.configure(
                &router_conf(peer.name, &id),
                peer.name,
                &id,
                peer.router_psk,
            )?;
            pair.edge.spawn(&charon)?;
            pair.router.spawn(&charon)?;
        }
        for (key, pair) in &fleet.pairs {
            pair.edge.wait_ready()?;
            pair.router.wait_ready()?;
            pair.edge.swanctl(&["--load-all", "--noprompt"])?;
            pair.router.swanctl(&["--load-all", "--noprompt"])?;
            let name = peers
                .iter()
                .find(|p| p.key == key)
                .map(|p| p.name)
                .expect("every pair has a peer");
            // A router holding another key fails here; that is its
            // tunnel being down from the start, not an error.
            let _ = pair
                .router
                .swanctl(&["--initiate", "--ike", name, "--timeout", "5"]);
        }
        Ok(fleet)
    }

    /// The directory the tunnels' charons live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The router of `key`: its `strongswan.conf` (for `STRONGSWAN_CONF`)
    /// and its swanctl directory (for `SWANCTL_DIR`).
    pub fn router(&self, key: &TunnelKey) -> Option<(PathBuf, PathBuf)> {
        self.pairs.get(key).map(|p| {
            (
                p.router.dir.join("strongswan.conf"),
                p.router.dir.join("swanctl"),
            )
        })
    }

    /// The edge of `key` takes `psk`: loaded into its charon, then the IKE
    /// SA authenticated with the old key is ended, as Cloudflare's edge
    /// stops accepting it.
    pub fn set_edge_key(&self, key: &TunnelKey, psk: &str) -> Result<(), FarEndError> {
        let Some(pair) = self.pairs.get(key) else {
            return Ok(());
        };
        write_secret(
            &pair.edge.dir.join("swanctl"),
            EDGE_CONN,
            &remote_id(key),
            psk,
        )?;
        pair.edge.swanctl(&["--load-creds", "--noprompt"])?;
        // Nothing to end is fine: the tunnel may be down already.
        let _ = pair.edge.swanctl(&[
            "--terminate",
            "--ike",
            EDGE_CONN,
            "--force",
            "--timeout",
            "2",
        ]);
        Ok(())
    }

    /// Whether the edge of `key` has an IKE SA established.
    pub fn edge_established(&self, key: &TunnelKey) -> bool {
        !self.is_stopped()
            && self.pairs.get(key).is_some_and(|p| {
                p.edge
                    .swanctl(&["--list-sas", "--ike", EDGE_CONN, "--raw", "--noblock"])
                    .is_ok_and(|out| out.contains("state=ESTABLISHED"))
            })
    }

    /// The names of its network namespaces.
    pub fn namespaces(&self) -> Vec<String> {
        self.pairs
            .values()
            .flat_map(|p| [p.edge.netns.clone(), p.router.netns.clone()])
            .collect()
    }

    /// The tunnels, for the poller.
    pub fn tunnels(&self) -> impl Iterator<Item = &TunnelKey> {
        self.pairs.keys()
    }
}

impl Fleet {
    /// Whether [`Fleet::stop`] ran.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Stops every charon and removes the namespaces (and the directory,
    /// if the fleet made it). Idempotent; also done on drop.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::Relaxed) {
            return;
        }
        for pair in self.pairs.values() {
            for c in [&pair.router, &pair.edge] {
                let process = c.process.lock().map(|mut p| p.take()).unwrap_or(None);
                if let Some(mut p) = process {
                    // SIGTERM lets charon end its SAs; then make sure.
                    let _ = Command::new("kill")
                        .arg(p.id().to_string())
                        .stderr(Stdio::null())
                        .status();
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while matches!(p.try_wait(), Ok(None)) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    let _ = p.kill();
                    let _ = p.wait();
                }
                let _ = Command::new("ip")
                    .args(["netns", "delete", &c.netns])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The identity of the customer's side of `key`, as the edge knows it.
fn remote_id(key: &TunnelKey) -> String {
    format!("{}.ipsec.psk-sandbox.invalid", key.tunnel_id)
}

/// Two namespaces joined by a veth pair, addressed inside them only.
fn link(edge_ns: &str, router_ns: &str) -> Result<(), FarEndError> {
    ip(&["netns", "add", edge_ns])?;
    ip(&["netns", "add", router_ns])?;
    ip(&[
        "link", "add", "name", "cf0", "netns", edge_ns, "type", "veth", "peer", "name", "cpe0",
        "netns", router_ns,
    ])?;
    for (ns, dev, addr) in [
        (edge_ns, "cf0", EDGE_ADDR),
        (router_ns, "cpe0", ROUTER_ADDR),
    ] {
        ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), FarEndError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| FarEndError::Failed(format!("cannot run `ip`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FarEndError::Failed(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn edge_conf(remote_id: &str) -> String {
    format!(
        "connections {{\n  {EDGE_CONN} {{\n    version = 2\n    local_addrs = {EDGE_ADDR}\n    remote_addrs = {ROUTER_ADDR}\n    proposals = {EDGE_PROPOSALS}\n    unique = replace\n    local {{\n      auth = psk\n      id = {EDGE_ADDR}\n    }}\n    remote {{\n      auth = psk\n      id = {remote_id}\n    }}\n  }}\n}}\ninclude conf.d/*.conf\n"
    )
}

fn router_conf(name: &str, local_id: &str) -> String {
    format!(
        "connections {{\n  {name} {{\n    version = 2\n    local_addrs = {ROUTER_ADDR}\n    remote_addrs = {EDGE_ADDR}\n    proposals = {ROUTER_PROPOSALS}\n    local {{\n      auth = psk\n      id = {local_id}\n    }}\n    remote {{\n      auth = psk\n      id = {EDGE_ADDR}\n    }}\n  }}\n}}\ninclude conf.d/*.conf\n"
    )
}

/// swanctl's `secrets` section for a PSK, hex-encoded so no character of
/// the key needs quoting.
fn secret_conf(section: &str, id: &str, psk: &str) -> String {
    let hex: String = psk.bytes().map(|b| format!("{b:02x}")).collect();
    format!("secrets {{\n  ike-psk-{section} {{\n    id-1 = {id}\n    secret = 0x{hex}\n  }}\n}}\n")
}

/// Writes the secret of connection `conn` as the delivery recipe does
/// (`conf.d/psk-<conn>.conf`, so a delivery replaces it rather than adding
/// a second key for the same identity): atomically, readable by its owner
/// only.
fn write_secret(swanctl: &Path, conn: &str, id: &str, psk: &str) -> Result<(), FarEndError> {
    let path = &swanctl.join(format!("conf.d/psk-{conn}.conf"));
    let tmp = path.with_extension("tmp");
    let failed =
        |e: std::io::Error| FarEndError::Failed(format!("cannot write {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(failed)?;
    f.write_all(secret_conf(conn, id, psk).as_bytes())
        .map_err(failed)?;
    f.sync_all().map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(failed)
}

impl Charon {
    /// Writes its strongswan.conf, swanctl.conf (`conns`) and the secret
    /// of its connection `conn`.
    fn configure(&self, conns: &str, conn: &str, id: &str, psk: &str) -> Result<(), FarEndError> {
        let failed = |e: std::io::Error| {
            FarEndError::Failed(format!("cannot write under {}: {e}", self.dir.display()))
        };
        let swanctl = self.dir.join("swanctl");
        for sub in SWANCTL_SUBDIRS {
            std::fs::create_dir_all(swanctl.join(sub)).map_err(failed)?;
        }
        let vici = self.dir.join("charon.vici");
        let log = self.dir.join("charon.log");
        // The vici socket outside /run, so swanctl reaches it from outside
        // the namespace; retransmits short, since both ends are local.
        let conf = format!(
            "charon {{\n  load = random nonce openssl pem pkcs1 x509 revocation constraints pubkey aes sha1 sha2 hmac gcm gmp kdf kernel-netlink socket-default vici\n  install_routes = no\n  retransmit_tries = 2\n  retransmit_timeout = 1.0\n  retransmit_base = 1.4\n  plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n  }}\n  filelog {{\n    log {{\n      path = {log}\n      time_format = %F %T\n      flush_line = yes\n      default = 1\n    }}\n  }}\n  syslog {{\n    daemon {{\n      default = -1\n    }}\n  }}\n}}\nswanctl {{\n  load = pem\n  socket = unix://{vici}\n}}\n",
            vici = vici.display(),
            log = log.display()
        );
        std::fs::write(self.dir.join("strongswan.conf"), conf).map_err(failed)?;
        std::fs::write(swanctl.join("swanctl.conf"), conns).map_err(failed)?;
        write_secret(&swanctl, conn, id, psk)
    }

    /// Starts charon in its namespace, with a private /run.
    fn spawn(&self, charon: &Path) -> Result<(), FarEndError> {
        let out = std::fs::File::create(self.dir.join("charon.out"))
            .map_err(|e| FarEndError::Failed(format!("cannot write charon's output: {e}")))?;
        let err = out
            .try_clone()
            .map_err(|e| FarEndError::Failed(format!("cannot write charon's output: {e}")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.netns, "sh", "-c"])
            .arg("mount -t tmpfs -o mode=0755 tmpfs /run && exec \"$0\"")
            .arg(charon)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| FarEndError::Failed(format!("cannot start charon: {e}")))?;
        *self.process.lock().expect("process lock") = Some(child);
        Ok(())
    }

    /// Waits until its vici socket answers.
    fn wait_ready(&self) -> Result<(), FarEndError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.swanctl(&["--stats"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let out = std::fs::read_to_string(self.dir.join("charon.out")).unwrap_or_default();
                return Err(FarEndError::Failed(format!(
                    "charon in namespace {} did not start within 10 s (its output: {})",
                    self.netns,
                    out.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs swanctl against this charon; its stdout, or why it failed.
    fn swanctl(&self, args: &[&str]) -> Result<String, FarEndError> {
        let out = Command::new("swanctl")
            .args(args)
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .env("SWANCTL_DIR", self.dir.join("swanctl"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| FarEndError::Failed(format!("cannot run swanctl: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(FarEndError::Failed(format!(
                "`swanctl {}` in namespace {} failed: {}",
                args.join(" "),
                self.netns,
                stdout.lines().last().unwrap_or("").trim()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_hex_so_no_key_needs_quoting() {
        let text = secret_conf("x", "t.example", "a\"b c");
        assert!(text.contains("secret = 0x6122622063"));
        assert!(text.contains("id-1 = t.example"));
    }

    #[test]
    fn the_edge_offers_cloudflares_proposals() {
        let conf = edge_conf("x");
        assert!(conf.contains("aes256gcm16") && conf.contains("aes128gcm16"));
        assert!(conf.contains("aes256-sha256") && conf.contains("modp2048"));
    }
}
