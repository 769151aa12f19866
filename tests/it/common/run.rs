//! One run of the real binary, and what a test says about it: the exit
//! code it expects (showing the whole run when it is another), and the run
//! as one text for a snapshot, so that a change in stdout, stderr or the
//! exit status shows in review.

use std::fmt;
use std::process::Output;
use std::sync::OnceLock;

use regex::Regex;

pub struct Run {
    /// psk's arguments, when the run was made from them (shown on failure
    /// and in snapshots).
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn to_run(out: Output) -> Run {
    Run {
        args: Vec::new(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl Run {
    /// Records the arguments psk ran with.
    pub fn with_args(mut self, args: &[&str]) -> Run {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts that psk exited 0, showing the whole run if not; returns
    /// the run for the checks that follow.
    #[track_caller]
    pub fn success(self) -> Run {
        self.code(0)
    }

    /// Asserts that psk exited 1, its code for every error.
    #[track_caller]
    pub fn failure(self) -> Run {
        self.code(1)
    }

    /// Asserts that psk exited `code` (2: changes present under
    /// `--detailed-exitcode`).
    #[track_caller]
    pub fn code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "psk exited {}, not {code}:\n{self:?}",
            self.code
        );
        self
    }

    /// `psk ARGS` as a shell would show it.
    fn command_line(&self) -> String {
        let mut line = String::from("psk");
        for a in &self.args {
            line.push(' ');
            if !a.is_empty() && !a.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
                line.push_str(a);
            } else {
                line.push_str(&format!("'{}'", a.replace('\'', r"'\''")));
            }
        }
        line
    }

    /// The whole run as one text: the command, the exit status, stdout and
    /// stderr, each stream verbatim (a missing final newline shows as the
    /// next marker on the same line), with what differs between two runs
    /// of the same test (temp paths, ports, times, dates, random ids, the
    /// test's own age recipient) replaced by placeholders.
    pub fn normalized(&self) -> String {
        let text = format!(
            "$ {}\n[exit {}]\n[stdout]\n{}[stderr]\n{}[end]\n",
            self.command_line(),
            self.code,
            self.stdout,
            self.stderr
        );
        normalize(&text)
    }
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.args.is_empty() {
            writeln!(f, "$ {}", self.command_line())?;
        }
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// What changes from one run of a test to the next, and its placeholder.
fn filters() -> &'static [(Regex, &'static str)] {
    static FILTERS: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    FILTERS.get_or_init(|| {
        let temp = regex::escape(&std::env::temp_dir().to_string_lossy());
        [
            // tempfile's folders: `.tmp` and six random characters.
            (format!(r"{temp}/?\.tmp[A-Za-z0-9]{{6}}"), "[TEMP]"),
            (
                r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})".into(),
                "[TIME]",
            ),
            (r"\b\d{4}-\d{2}-\d{2}\b".into(), "[DATE]"),
            (
                r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b".into(),
                "[UUID]",
            ),
            (r"127\.0\.0\.1:\d+".into(), "127.0.0.1:[PORT]"),
            (r"\bage1[02-9ac-hj-np-z]{58}\b".into(), "[RECIPIENT]"),
            (r"\bsha256:[0-9a-f]{16}\b".into(), "sha256:[FINGERPRINT]"),
        ]
        .into_iter()
        .map(|(re, to)| (Regex::new(&re).unwrap(), to))
        .collect()
    })
}

fn normalize(text: &str) -> String {
    filters().iter().fold(text.to_string(), |t, (re, to)| {
        re.replace_all(&t, *to).into_owned()
    })
}

#[test]
fn normalize_replaces_what_differs_between_runs() {
    let temp = std::env::temp_dir().join(".tmpAb12Cd");
    let text = format!(
        "{}/psk.yaml at 2026-11-27T14:53:05.603330Z, due 2027-02-25, lineage \
         0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b, http://127.0.0.1:41234/client/v4, \
         age1hulcwrj8drla6mh0v9udwl0q98pgp45sn8l8c6483wg2ktqld38qershhj sha256:eef385bafd281245",
        temp.display()
    );
    assert_eq!(
        normalize(&text),
        "[TEMP]/psk.yaml at [TIME], due [DATE], lineage [UUID], \
         http://127.0.0.1:[PORT]/client/v4, [RECIPIENT] sha256:[FINGERPRINT]"
    );
}
