//! The one way into psk's files and Cloudflare for a command.
//!
//! Every command that reads psk.yaml opens a [`Session`]: it loads the
//! config (with the ids the state knows for tunnels named by name), knows
//! where the state lives, reads it or takes its lock, and connects to
//! Cloudflare or to an in-process sandbox. Planning online (connect,
//! refresh, reconcile, dry-run) is written once here, for `plan` and
//! `apply` alike, so the two can never plan differently. The commands that
//! open sealed PSKs gather the user's age identities here too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use chrono::{DateTime, Utc};

use super::args::{Global, LockWait, StateOverrides};
use super::identity_perms::warn_if_loose;
use crate::cloudflare::{Client, ClientOptions, Credentials};
use crate::config::Config;
use crate::reconcile::{self, resolve_names, Plan, PlanOptions};
use crate::remote;
use crate::sandbox::{self, Running, Sandbox, SandboxOptions};
use crate::seal::Identities;
use crate::state::{self, Location, Lock, NewState, State};

/// A command's view of psk.yaml and where its state lives.
pub struct Session<'g> {
    pub global: &'g Global,
    pub config: Config,
    /// Where the state lives, parsed once.
    pub location: Location,
    /// The location as written, for messages.
    pub state_path: PathBuf,
    /// `--new-state`: the operator means to start a state even where psk
    /// left a backup or lock file of a state that is now missing.
    new_state: bool,
    /// `--foreign-state`: the operator means to use a state that shares
    /// nothing with psk.yaml.
    foreign_state: bool,
}

impl<'g> Session<'g> {
    /// Reads psk.yaml. Tunnels named only by name get the id the state
    /// recorded for them (when it did), so `--offline` can plan them.
    pub fn open(global: &'g Global) -> anyhow::Result<Self> {
        let mut config = Config::load(&global.config)?;
        tracing::info!(
            path = %config.path.display(),
            tunnels = config.tunnels.len(),
            by_name = config.unresolved.len(),
            "psk.yaml loaded"
        );
        let location = global.state_location(&config)?;
        let state_path = location.path().to_path_buf();
        if !config.unresolved.is_empty() {
            // A state that does not load is reported by the command itself.
            if let Ok(Some(state)) = state::load(&location, NewState::IfNoTraces) {
                resolve_names(&mut config, Some(&state), None)?;
            }
        }
        Ok(Session {
            global,
            config,
            location,
            state_path,
            new_state: false,
            foreign_state: false,
        })
    }

    /// What the operator allowed with `--new-state` and `--foreign-state`.
    pub fn overrides(&mut self, overrides: &StateOverrides) {
        self.new_state = overrides.new_state;
        self.foreign_state = overrides.foreign_state;
    }

    /// Reads the state, or `None` when there is none yet. A state that
    /// went missing (its backup or lock file is still there), or that is
    /// another psk.yaml's, is refused with the way back, unless
    /// `--new-state` or `--foreign-state` said otherwise.
    pub fn read_state(&self) -> anyhow::Result<Option<State>> {
        let state = state::load(&self.location, self.new_state())?;
        self.check_belongs(state.as_ref())?;
        Ok(state)
    }

    fn check_belongs(&self, state: Option<&State>) -> anyhow::Result<()> {
        match state {
            Some(s) if !self.foreign_state => {
                Ok(state::check_belongs(s, &self.state_path, &self.config)?)
            }
            _ => Ok(()),
        }
    }

    fn new_state(&self) -> NewState {
        if self.new_state {
            NewState::Allowed
        } else {
            NewState::IfNoTraces
        }
    }

    /// Reads the state for a command that needs one (show, export).
    pub fn require_state(&self) -> anyhow::Result<State> {
        self.read_state()?.ok_or_else(|| {
            anyhow::anyhow!(
                "there is no state file at {}; run `psk apply` first",
                self.state_path.display()
            )
        })
    }

    /// Takes the state lock for `operation` (waiting as `--lock-timeout`
    /// says for another psk), then loads the state for writing: any journal
    /// an interrupted apply left is folded in first.
    pub fn lock(&self, operation: &str, wait: &LockWait) -> anyhow::Result<Writable> {
        let path = self.state_path.clone();
        let lock = Lock::acquire(&self.location, operation, wait.timeout())?;
        let state = state::load_for_write(&lock, self.new_state())?;
        self.check_belongs(state.as_ref())?;
        Ok(Writable { path, lock, state })
    }

    /// A client for Cloudflare, or for an in-process sandbox holding
    /// psk.yaml's tunnels (and `state`'s keys) under `--sandbox`.
    pub async fn connect(&self, state: Option<&State>) -> anyhow::Result<Connection> {
        let network = &self.global.network;
        if !self.global.sandbox {
            let credentials = Credentials::from_env()?;
            let client = Client::new(&credentials, network.client_options())?;
            return Ok(Connection {
                client,
                _sandbox: None,
            });
        }
        let sandbox_options = SandboxOptions {
            health: self.global.far_end.health(),
            far_end: self.global.far_end.kind(),
            ..SandboxOptions::default()
        };
        let sb = Sandbox::from_config(&self.config, state, &sandbox_options)
            .context("cannot start the sandbox")?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the sandbox to a loopback port")?;
        let running = sandbox::spawn(listener, Arc::new(sb))?;
        let options = ClientOptions {
            base_url: running.base_url(),
            ..network.client_options()
        };
        let token = Credentials::Token(sandbox_options.credentials.token);
        let client = Client::new(&token, options)?;
        Ok(Connection {
            client,
            _sandbox: Some(running),
        })
    }

    /// The plan from psk.yaml and the state alone: no token, no request.
    pub fn plan_offline(
        &self,
        state: Option<&State>,
        now: DateTime<Utc>,
        options: &PlanOptions,
    ) -> anyhow::Result<Plan> {
        self.config.require_resolved(
            "the state does not record its id, and --offline does not ask Cloudflare",
        )?;
        Ok(reconcile::reconcile_with(
            &self.config,
            state,
            None,
            now,
            options,
        ))
    }

    /// For a saved plan: tunnels psk.yaml names by name alone that the
    /// state does not know yet get their ids from Cloudflare's list, as
    /// when the plan was made, so the plan can be checked against them.
    /// `None` (no request) when every tunnel already has its id.
    pub async fn resolve_online(
        &mut self,
        state: Option<&State>,
    ) -> anyhow::Result<Option<Connection>> {
        if self.config.unresolved.is_empty() {
            return Ok(None);
        }
        let connection = self.connect(state).await?;
        remote::refresh(&connection.client, &mut self.config).await?;
        Ok(Some(connection))
    }

    /// Connects, lists every account's tunnels (which gives tunnels named
    /// by name their ids in `config`), plans, and dry-runs each PSK change.
    /// The connection comes back too, for apply to go on with. `watch`
    /// sees each account listed and each dry run answered (progress).
    pub async fn plan_online(
        &mut self,
        state: Option<&State>,
        now: DateTime<Utc>,
        options: &PlanOptions,
        watch: &dyn remote::Watch,
    ) -> anyhow::Result<(Plan, Connection)> {
        let connection = self.connect(state).await?;
        let client = &connection.client;
        let mut remote = remote::refresh_watched(client, &mut self.config, watch).await?;
        remote::list_departed(client, &self.config, state, &mut remote).await;
        let mut plan = reconcile::reconcile_with(&self.config, state, Some(&remote), now, options);
        remote::dry_run_watched(client, &self.config, &mut plan, watch).await;
        Ok((plan, connection))
    }
}

/// Every age identity the user offered, from every source at once: the
/// key that opens sealed PSKs (show, export, deliver, reseal). A file
/// others may read is warned about, as `ssh` does for a private key.
pub fn identities(files: &[PathBuf]) -> anyhow::Result<Identities> {
    let mut ids = Identities::default();
    for f in files {
        ids.add_file(f)?;
        warn_if_loose(f);
    }
    if let Some(f) = std::env::var_os("PSK_AGE_KEY_FILE").filter(|v| !v.is_empty()) {
        let f = std::path::Path::new(&f);
        ids.add_file(f).context("from PSK_AGE_KEY_FILE")?;
        warn_if_loose(f);
    }
    if let Ok(k) = std::env::var("PSK_AGE_KEY") {
        if !k.trim().is_empty() {
            ids.add_text(&k, "PSK_AGE_KEY")?;
        }
    }
    if ids.is_empty() {
        bail!("no age identity to open the PSK with.\nPass --identity FILE, or set PSK_AGE_KEY_FILE or PSK_AGE_KEY");
    }
    Ok(ids)
}

/// A client, and the sandbox it talks to under `--sandbox`: the sandbox
/// serves as long as this lives.
pub struct Connection {
    pub client: Client,
    _sandbox: Option<Running>,
}

/// The state as a writer holds it: locked until this is dropped.
pub struct Writable {
    pub path: PathBuf,
    pub lock: Lock,
    /// `None` when there is no state file yet.
    pub state: Option<State>,
}

impl Writable {
    /// The state, for commands that need one to exist: `otherwise` says
    /// what to do instead (e.g. "run `psk apply` first").
    pub fn existing(self, otherwise: &str) -> anyhow::Result<(PathBuf, Lock, State)> {
        match self.state {
            Some(state) => Ok((self.path, self.lock, state)),
            None => bail!(
                "there is no state file at {}; {otherwise}",
                self.path.display()
            ),
        }
    }
}

/// Why `show` or `export` finds no record for `name`: a tunnel psk.yaml
/// lists but psk holds no key for yet is not an unknown name, and a name
/// close to one psk.yaml has is likely a typo.
pub fn no_record(config: &Config, state_path: &Path, name: &str) -> String {
    let listed =
        config.tunnel_by_name(name).is_some() || config.unresolved.iter().any(|u| u.name == name);
    if listed {
        return format!(
            "psk holds no PSK for `{name}` yet: it is in {}, but {} has no record of it; run `psk apply` to generate one, or `psk import {name}` to adopt the key its router uses now",
            config.path.display(),
            state_path.display()
        );
    }
    format!(
        "no tunnel named `{name}` in {} or {}{}",
        config.path.display(),
        state_path.display(),
        config.did_you_mean(name)
    )
}
