//! `psk schema`.

use std::io::Write;

use clap::Args;

use super::exit::Status;
use crate::config::schema;

/// Print the JSON Schema of psk.yaml (the same as schema/psk.schema.json),
/// for editors and CI. Point an editor at it with a first line like
/// `# yaml-language-server: $schema=schema/psk.schema.json`.
#[derive(Debug, Args)]
pub struct SchemaArgs {}

pub fn run(_args: SchemaArgs) -> anyhow::Result<Status> {
    let mut out = std::io::stdout().lock();
    out.write_all(schema::schema_text().as_bytes())?;
    out.flush()?;
    Ok(Status::Success)
}
