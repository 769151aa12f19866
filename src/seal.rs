//! Sealing PSKs with age.
//!
//! The machine that rotates keys only ever holds *public* recipients, so it
//! can seal a fresh PSK but never read one back. Opening a sealed PSK needs an
//! identity (a private key) and is reserved for `psk show` and friends.

use std::fmt;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::armor::{ArmoredReader, ArmoredWriter, Format};
use zeroize::Zeroizing;

/// A pre-shared key in memory.
///
/// It zeroes its buffer on drop and never prints: `Debug` shows a marker and
/// there is no `Display`. The only way out is [`Psk::expose`], which keeps
/// every place that writes a PSK easy to find with grep.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Zeroizing<String>);

impl Psk {
    pub fn new(secret: String) -> Self {
        Psk(Zeroizing::new(secret))
    }

    /// The plaintext. Call only where the PSK must leave psk: sealing it,
    /// sending it to Cloudflare, or `psk show` on explicit request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The shortest and longest PSK Cloudflare's bulk set accepts (printable
/// ASCII, no spaces, as the sandbox models it). Common IKE peers agree on
/// that range: AWS Site-to-Site VPN takes 8 to 64, Cisco IOS and strongSwan
/// up to 128, and a space or a non-ASCII character is read differently by
/// different routers. A key outside it cannot be a tunnel's current PSK.
pub const PSK_MIN_LEN: usize = 8;
/// See [`PSK_MIN_LEN`].
pub const PSK_MAX_LEN: usize = 128;
/// The shortest PSK psk adopts without `--force`: below it a key can be
/// guessed offline from one captured IKE exchange (16 random printable
/// characters are about 100 bits). Keys Cloudflare or psk make are 32
/// random letters and digits.
pub const PSK_STRONG_LEN: usize = 16;

/// How a PSK falls short of the rule at [`PSK_MIN_LEN`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PskFault {
    /// Cloudflare would refuse it: it cannot be any tunnel's key.
    Unusable(String),
    /// Usable, but short enough to be guessed.
    Weak(String),
}

impl Psk {
    /// Why this PSK breaks the rule at [`PSK_MIN_LEN`], or `None` when it
    /// meets it. The answer names lengths and classes, never a character.
    pub fn rule_fault(&self) -> Option<PskFault> {
        let len = self.0.len();
        if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Some(PskFault::Unusable(
                "it holds a space, a control or a non-ASCII character".into(),
            ));
        }
        if !(PSK_MIN_LEN..=PSK_MAX_LEN).contains(&len) {
            return Some(PskFault::Unusable(format!(
                "it is {len} characters long, and Cloudflare and common routers take \
                 {PSK_MIN_LEN} to {PSK_MAX_LEN}"
            )));
        }
        (len < PSK_STRONG_LEN).then(|| {
            PskFault::Weak(format!(
                "it is {len} characters long; below {PSK_STRONG_LEN} a key can be guessed \
                 offline from one captured IKE exchange"
            ))
        })
    }
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("`{0}` is not an age recipient (age1...) or an SSH public key (ssh-ed25519 or ssh-rsa): {1}")]
    BadRecipient(String, String),
    /// A private key where a public one belongs. It carries no part of the
    /// text: CI logs keep what psk prints, and the key must not land there.
    #[error("{0}")]
    PrivateKey(PrivateKeyKind),
    /// An `age1...` recipient that does not decode: a typo, most often.
    #[error("`{text}` is not a valid age recipient: {why}")]
    BadAgeRecipient { text: String, why: String },
    #[error("no recipients: a PSK sealed to nobody could never be opened")]
    NoRecipients,
    #[error("could not seal the PSK: {0}")]
    Encrypt(String),
    #[error("the sealed PSK is not a valid age message: {0}")]
    Malformed(String),
    #[error("none of the identities given can open this PSK (it is sealed to other recipients)")]
    NoMatchingIdentity,
    #[error("the sealed PSK could not be decrypted: {0}")]
    Decrypt(String),
    #[error("the sealed PSK does not hold UTF-8 text")]
    NotText,
    #[error("could not read identity file {path}: {message}")]
    IdentityFile { path: PathBuf, message: String },
    #[error("{source_name} holds no usable identity: {message}")]
    IdentityText {
        source_name: String,
        message: String,
    },
}

/// One public key that sealed PSKs are encrypted to.
pub struct Recipient {
    text: String,
    inner: Box<dyn age::Recipient + Send + Sync>,
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Recipient").field(&self.text).finish()
    }
}

impl Recipient {
    /// The recipient as written in psk.yaml, trimmed.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A short stable identifier stored in the state header, so a change of
    /// recipients is visible in a diff without repeating whole SSH keys.
    /// SSH comments are ignored: they do not change who can decrypt.
    pub fn fingerprint(&self) -> String {
        let canonical: String = if self.text.starts_with("ssh-") {
            self.text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            self.text.clone()
        };
        let digest = sha2_hex(canonical.as_bytes());
        format!("sha256:{}", &digest[..16])
    }
}

impl FromStr for Recipient {
    type Err = SealError;

    /// Tries each recipient type in turn, as age's own CLI does. A private
    /// key is refused before anything else, without a byte of it in the
    /// error; an `age1...` that does not decode says why.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(kind) = PrivateKeyKind::detect(s) {
            return Err(SealError::PrivateKey(kind));
        }
        let text = s.trim().to_string();
        if text.to_ascii_lowercase().starts_with("age1") {
            return age::x25519::Recipient::from_str(&text)
                .map(|r| Recipient {
                    text: text.clone(),
                    inner: Box::new(r),
                })
                .map_err(|_| SealError::BadAgeRecipient {
                    why: age_recipient_fault(&text),
                    text,
                });
        }
        if let Ok(r) = age::x25519::Recipient::from_str(&text) {
            return Ok(Recipient {
                text,
                inner: Box::new(r),
            });
        }
        match age::ssh::Recipient::from_str(&text) {
            Ok(r) => Ok(Recipient {
                text,
                inner: Box::new(r),
            }),
            Err(e) => {
                let why = match e {
                    age::ssh::ParseRecipientKeyError::Ignore => "unsupported key type".to_string(),
                    age::ssh::ParseRecipientKeyError::Invalid(why) => why.to_string(),
                    age::ssh::ParseRecipientKeyError::RsaModulusTooLarge => {
                        "RSA modulus too large".to_string()
                    }
                    age::ssh::ParseRecipientKeyError::RsaModulusTooSmall => {
                        "RSA modulus smaller than 2048 bits".to_string()
                    }
                    age::ssh::ParseRecipientKeyError::Unsupported(t) => {
                        format!("unsupported SSH key type {t}")
                    }
                    _ => "not a valid SSH public key".to_string(),
                };
                let shown = if text.chars().count() > 40 {
                    format!("{}...", text.chars().take(40).collect::<String>())
                } else {
                    text
                };
                Err(SealError::BadRecipient(shown, why))
            }
        }
    }
}

/// What kind of private key was found where a recipient belongs, and so
/// where its public half comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyKind {
    /// `AGE-SECRET-KEY-1...` (or an `AGE-PLUGIN-...` identity).
    Age,
    /// A PEM block: `-----BEGIN OPENSSH PRIVATE KEY-----` and its kin.
    Ssh,
}

impl PrivateKeyKind {
    /// Recognises a private key anywhere in `text` (pasted with a comment
    /// line, or as a YAML block with its armor lines).
    pub fn detect(text: &str) -> Option<Self> {
        let upper = text.to_ascii_uppercase();
        if upper.contains("AGE-SECRET-KEY-") || upper.contains("AGE-PLUGIN-") {
            Some(PrivateKeyKind::Age)
        } else if upper.contains("PRIVATE KEY") || upper.contains("PUTTY-USER-KEY-FILE") {
            Some(PrivateKeyKind::Ssh)
        } else {
            None
        }
    }
}

impl fmt::Display for PrivateKeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrivateKeyKind::Age => f.write_str(
                "this is an age private key (AGE-SECRET-KEY-1...), not a recipient; \
                 psk.yaml takes its public half, the `# public key: age1...` line of the \
                 identity file or the output of `age-keygen -y FILE`. \
                 Remove it, and treat the key as exposed if this file was ever committed",
            ),
            PrivateKeyKind::Ssh => f.write_str(
                "this is an SSH private key, not a recipient; psk.yaml takes its public \
                 half, the one line of the `.pub` file beside it or the output of \
                 `ssh-keygen -y -f FILE`. Remove it, and treat the key as exposed if this \
                 file was ever committed",
            ),
        }
    }
}

/// Why an `age1...` string is not an age recipient, in words that point at
/// the typo: a character bech32 never uses, a wrong length, or a checksum
/// that does not match (a character changed, missing or swapped).
fn age_recipient_fault(text: &str) -> String {
    const CHARSET: &str = "qpzry9x8gf2tvdw0s3jn54khce6mua7l";
    const LEN: usize = 62;
    let data = &text[4..];
    if text.chars().any(char::is_uppercase) && text.chars().any(char::is_lowercase) {
        return "it mixes upper and lower case; an age recipient is all lower case".into();
    }
    let lower = data.to_ascii_lowercase();
    if let Some(c) = lower.chars().find(|c| !CHARSET.contains(*c)) {
        return format!(
            "`{c}` never appears in an age recipient after `age1` (there is no b, i, o or 1); \
             copy it again from `age-keygen -y`"
        );
    }
    if text.len() != LEN {
        return format!(
            "it is {} characters long, an age recipient is {LEN}; copy it again from `age-keygen -y`",
            text.len()
        );
    }
    "its checksum is wrong: a character is mistyped or two are swapped; \
     copy it again from `age-keygen -y`"
        .into()
}

fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Encrypts `psk` to every recipient and returns the ASCII-armored message.
pub fn seal(psk: &Psk, recipients: &[Recipient]) -> Result<String, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let encryptor = age::Encryptor::with_recipients(
        recipients
            .iter()
            .map(|r| r.inner.as_ref() as &dyn age::Recipient),
    )
    .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut out = Vec::new();
    let armor = ArmoredWriter::wrap_output(&mut out, Format::AsciiArmor)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    let mut writer = encryptor
        .wrap_output(armor)
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    writer
        .write_all(psk.expose().as_bytes())
        .and_then(|_| writer.finish())
        .and_then(|armor| armor.finish())
        .map_err(|e| SealError::Encrypt(e.to_string()))?;
    String::from_utf8(out).map_err(|_| SealError::Encrypt("armor is not UTF-8".into()))
}

/// Private keys able to open sealed PSKs.
#[derive(Default)]
pub struct Identities(Vec<Box<dyn age::Identity + Send + Sync>>);

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identities(<{} redacted>)", self.0.len())
    }
}

impl Identities {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds every identity in a file: an age identity file (one or more
    /// `AGE-SECRET-KEY-1...` lines) or an unencrypted SSH private key.
    pub fn add_file(&mut self, path: &Path) -> Result<(), SealError> {
        let bytes = std::fs::read(path).map_err(|e| SealError::IdentityFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let bytes = Zeroizing::new(bytes);
        self.add_bytes(&bytes, &path.display().to_string())
            .map_err(|message| SealError::IdentityFile {
                path: path.to_path_buf(),
                message,
            })
    }

    /// Adds identities given inline (the `PSK_AGE_KEY` variable).
    pub fn add_text(&mut self, text: &str, source_name: &str) -> Result<(), SealError> {
        self.add_bytes(text.as_bytes(), source_name)
            .map_err(|message| SealError::IdentityText {
                source_name: source_name.to_string(),
                message,
            })
    }

    fn add_bytes(&mut self, bytes: &[u8], name: &str) -> Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
        if text.contains("PRIVATE KEY-----") {
            let id = age::ssh::Identity::from_buffer(BufReader::new(bytes), Some(name.into()))
                .map_err(|e| format!("not a usable SSH private key: {e}"))?;
            match id {
                age::ssh::Identity::Unencrypted(_) => {
                    self.0.push(Box::new(id));
                    Ok(())
                }
                age::ssh::Identity::Encrypted(_) => Err(
                    "passphrase-protected SSH keys are not supported; decrypt a copy with `ssh-keygen -p` or use an age identity"
                        .into(),
                ),
                age::ssh::Identity::Unsupported(_) => {
                    Err("unsupported SSH key type (use ed25519 or rsa)".into())
                }
            }
        } else {
            let parsed = age::IdentityFile::from_buffer(BufReader::new(bytes))
                .map_err(|e| e.to_string())
                .and_then(|file| file.into_identities().map_err(|e| e.to_string()));
            match parsed {
                Ok(ids) if !ids.is_empty() => {
                    self.0.extend(ids);
                    Ok(())
                }
                // age's own words ("non-identity data on line 1") do not
                // say that the file holds the other half of the key pair.
                _ if public_key_line(text).is_some() => Err(public_key_given(text)),
                Ok(_) => Err("no AGE-SECRET-KEY-1 line found".into()),
                Err(e) => Err(e),
            }
        }
    }
}

/// The public keys (`age1...`) of every age identity in the file at
/// `path`, for `psk init --identity`: what psk.yaml lists so the holder of
/// the file can open the PSKs. The file's bytes are wiped after reading;
/// only the public halves leave this function.
pub fn public_keys_of(path: &Path) -> Result<Vec<String>, SealError> {
    let fault = |message: String| SealError::IdentityFile {
        path: path.to_path_buf(),
        message,
    };
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| fault(e.to_string()))?);
    let text = std::str::from_utf8(&bytes).map_err(|_| fault("not UTF-8 text".into()))?;
    if text.contains("PRIVATE KEY-----") {
        return Err(fault(
            "an SSH private key: list its public half with `--recipient \"$(cat KEY.pub)\"` instead"
                .into(),
        ));
    }
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .map(|l| {
            age::x25519::Identity::from_str(l)
                .map(|id| id.to_public().to_string())
                .map_err(|_| fault("holds an AGE-SECRET-KEY-1 line that is not a valid key".into()))
        })
        .collect::<Result<_, _>>()?;
    if keys.is_empty() {
        return Err(fault("no AGE-SECRET-KEY-1 line found".into()));
    }
    Ok(keys)
}

/// The first line (1-based) of `text` that is a public key: an age
/// recipient or an SSH public key.
fn public_key_line(text: &str) -> Option<(usize, bool)> {
    text.lines().enumerate().find_map(|(i, line)| {
        let line = line.trim();
        if line.starts_with("age1") && line.parse::<age::x25519::Recipient>().is_ok() {
            Some((i + 1, false))
        } else if line.starts_with("ssh-") && line.parse::<age::ssh::Recipient>().is_ok() {
            Some((i + 1, true))
        } else {
            None
        }
    })
}

/// What to say when a public key was given where the private one belongs.
fn public_key_given(text: &str) -> String {
    match public_key_line(text) {
        Some((line, false)) => format!(
            "line {line} is an age recipient (a public key, age1...), not an identity: recipients go in psk.yaml's `recipients`; to open PSKs give the identity file that `age-keygen -o` wrote (its AGE-SECRET-KEY-1... line)"
        ),
        Some((line, true)) => format!(
            "line {line} is an SSH public key, not an identity: it can be a recipient in psk.yaml's `recipients`; to open PSKs give the private key file (e.g. ~/.ssh/id_ed25519, not id_ed25519.pub)"
        ),
        None => "no AGE-SECRET-KEY-1 line found".into(),
    }
}

/// Decrypts an armored age message with any of the identities.
pub fn open(armored: &str, identities: &Identities) -> Result<Psk, SealError> {
    let reader = ArmoredReader::new(armored.as_bytes());
    let decryptor = age::Decryptor::new(reader).map_err(|e| SealError::Malformed(e.to_string()))?;
    let mut plain = Zeroizing::new(Vec::new());
    let mut stream = decryptor
        .decrypt(
            identities
                .0
                .iter()
                .map(|i| i.as_ref() as &dyn age::Identity),
        )
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => SealError::NoMatchingIdentity,
            other => SealError::Decrypt(other.to_string()),
        })?;
    stream
        .read_to_end(&mut plain)
        .map_err(|e| SealError::Decrypt(e.to_string()))?;
    let text = String::from_utf8(std::mem::take(&mut *plain)).map_err(|_| SealError::NotText)?;
    Ok(Psk::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn keypair() -> (String, String) {
        let id = age::x25519::Identity::generate();
        (
            id.to_public().to_string(),
            id.to_string().expose_secret().to_string(),
        )
    }

    #[test]
    fn a_public_key_given_as_identity_is_named_as_such() {
        let (public, _) = keypair();
        let mut ids = Identities::default();
        let e = ids
            .add_text(&format!("# mine\n{public}\n"), "test")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2 is an age recipient"), "{e}");
        assert!(!e.contains("non-identity"), "{e}");
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example\n";
        let e = ids.add_text(ssh, "test").unwrap_err().to_string();
        assert!(e.contains("line 1 is an SSH public key"), "{e}");
    }

    #[test]
    fn seals_and_opens_with_any_recipient() {
        let (pub1, sec1) = keypair();
        let (pub2, sec2) = keypair();
        let recipients = vec![pub1.parse().unwrap(), pub2.parse().unwrap()];
        let psk = Psk::new("O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy".into());
        let sealed = seal(&psk, &recipients).unwrap();
        assert!(sealed.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
        assert!(!sealed.contains(psk.expose()));
        for sec in [sec1, sec2] {
            let mut ids = Identities::default();
            ids.add_text(&sec, "test").unwrap();
            assert_eq!(open(&sealed, &ids).unwrap(), psk);
        }
        let (_, other) = keypair();
        let mut ids = Identities::default();
        ids.add_text(&other, "test").unwrap();
        assert!(matches!(
            open(&sealed, &ids),
            Err(SealError::NoMatchingIdentity)
        ));
    }

    #[test]
    fn the_psk_rule_takes_8_to_128_printable_characters_and_wants_16() {
        let fault = |s: &str| Psk::new(s.into()).rule_fault();
        let unusable = |s: &str| match fault(s) {
            Some(PskFault::Unusable(why)) => why,
            other => panic!("{s:?}: {other:?}"),
        };
        let weak = |s: &str| match fault(s) {
            Some(PskFault::Weak(why)) => why,
            other => panic!("{s:?}: {other:?}"),
        };
        assert_eq!(fault("O3bwKSjnaoCxDoUxjcq4Rk8ZKkezQUiy"), None);
        assert_eq!(fault(&"x".repeat(16)), None);
        assert_eq!(fault(&"x".repeat(128)), None);
        assert!(weak("12345678").contains("8 characters long"));
        assert!(weak(&"x".repeat(15)).contains("below 16"));
        assert!(unusable("short").contains("5 characters long"));
        assert!(unusable("1234567").contains("8 to 128"));
        assert!(unusable(&"x".repeat(129)).contains("129 characters"));
        assert!(unusable("has space inside").contains("space"));
        assert!(unusable("caf\u{e9}-au-lait-key").contains("non-ASCII"));
        assert!(!unusable("short").contains("short"));
    }

    #[test]
    fn psk_debug_is_redacted() {
        let psk = Psk::new("supersecret".into());
        assert_eq!(format!("{psk:?}"), "Psk(<redacted>)");
    }

    #[test]
    fn rejects_garbage_recipients_without_echoing_all_of_it() {
        let err = "age1notakey".parse::<Recipient>().unwrap_err();
        assert!(err.to_string().contains("age1notakey"));
        let long = "x".repeat(200);
        let err = long.parse::<Recipient>().unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn private_keys_are_refused_without_a_byte_of_them() {
        let (_, age_secret) = keypair();
        let ssh = "-----BEGIN OPENSSH PRIVATE KEY-----\n\
                   b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n\
                   -----END OPENSSH PRIVATE KEY-----\n";
        let pem =
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----";
        for (text, kind, public_half) in [
            (age_secret.as_str(), PrivateKeyKind::Age, "age-keygen -y"),
            (ssh, PrivateKeyKind::Ssh, "ssh-keygen -y"),
            (pem, PrivateKeyKind::Ssh, "ssh-keygen -y"),
        ] {
            let err = text.parse::<Recipient>().unwrap_err();
            assert!(matches!(err, SealError::PrivateKey(k) if k == kind));
            let msg = err.to_string();
            assert!(msg.contains("private key"), "{msg}");
            assert!(msg.contains(public_half), "{msg}");
            // The body, without the prefix every such key shares.
            let body = text.trim_start_matches("AGE-SECRET-KEY-1");
            for line in body
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with("-----"))
            {
                for piece in line.as_bytes().chunks(8).filter(|c| c.len() == 8) {
                    let piece = std::str::from_utf8(piece).unwrap();
                    assert!(!msg.contains(piece), "echoes `{piece}`: {msg}");
                }
            }
        }
    }

    #[test]
    fn a_broken_age_recipient_says_what_is_wrong() {
        let (good, _) = keypair();
        let why = |text: &str| text.parse::<Recipient>().unwrap_err().to_string();
        // One character changed to another bech32 character: the checksum.
        let mut typo = good.clone().into_bytes();
        let i = 20;
        typo[i] = if typo[i] == b'q' { b'p' } else { b'q' };
        let typo = String::from_utf8(typo).unwrap();
        let msg = why(&typo);
        assert!(msg.contains("checksum is wrong"), "{msg}");
        assert!(!msg.contains("SSH"), "{msg}");
        // Swapped neighbours.
        let mut swapped = good.clone().into_bytes();
        swapped.swap(30, 31);
        if swapped != good.as_bytes() {
            let msg = why(std::str::from_utf8(&swapped).unwrap());
            assert!(msg.contains("checksum is wrong"), "{msg}");
        }
        assert!(why(&good[..61]).contains("61 characters long"));
        let with_b = format!("{}b{}", &good[..10], &good[11..]);
        assert!(why(&with_b).contains("`b` never appears"));
        assert!(why("age1notakey").contains("`age1notakey` is not a valid age recipient"));
    }

    #[test]
    fn fingerprint_ignores_ssh_comment() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN";
        let a: Recipient = format!("{key} alice@example.com").parse().unwrap();
        let b: Recipient = key.parse().unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert!(a.fingerprint().starts_with("sha256:"));
    }
}
