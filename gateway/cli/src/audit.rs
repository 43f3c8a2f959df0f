//! `interop-gateway audit export|archive`: the disclosure audit of a *stopped* gateway's data
//! directory, offline. `export` writes every record the store holds as JSON lines (the archive's
//! format, [`interop_gateway::store::archive`]), pruning nothing; `archive` runs the same pass a
//! gateway with `--audit-retention-days` runs (segments written and synced, then pruned), for an
//! operator who prunes by hand rather than by a standing setting. While the gateway runs its
//! store is locked: export the live audit with `interop admin disclosures` (CSV) instead.

use anyhow::Context;
use clap::Subcommand;
use interop_gateway::server::retention::audit_cutoff;
use interop_gateway::store::{DisclosureFilter, RedbStore, Store, archive};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Write every disclosure record held in the store to stdout as JSON lines, oldest first
    /// (nothing is removed).
    Export {
        /// Data directory of the stopped gateway.
        #[arg(long, env = "INTEROP_DATA")]
        data: PathBuf,
        /// Only this TCN's.
        #[arg(long, default_value = "")]
        tcn: String,
        /// Only this recipient's: a SPIFFE id, e.g. spiffe://interop.local/bureau/TX.
        #[arg(long, default_value = "")]
        recipient: String,
    },
    /// Archive the records older than N days (the cut-off rounded down to a whole day, as the
    /// gateway does) to DATA/archive, then remove them from the store.
    Archive {
        /// Data directory of the stopped gateway.
        #[arg(long, env = "INTEROP_DATA")]
        data: PathBuf,
        /// Archive records delivered more than this many days ago (0: every record).
        #[arg(long)]
        older_than_days: u32,
    },
}

/// Opens the store of a stopped gateway, refusing a directory that holds none.
fn open(data: &Path) -> anyhow::Result<RedbStore> {
    anyhow::ensure!(
        data.join("interop.redb").is_file(),
        "--data {}: no store here (interop.redb is missing)",
        data.display()
    );
    RedbStore::open(data).with_context(|| {
        format!(
            "opening the store in {} (stop the gateway first; while it runs, use \
             `interop admin disclosures`)",
            data.display()
        )
    })
}

pub async fn run(cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Export {
            data,
            tcn,
            recipient,
        } => export(&open(&data)?, DisclosureFilter { tcn, recipient }).await,
        AuditCmd::Archive {
            data,
            older_than_days,
        } => {
            let store = open(&data)?;
            let period = Duration::from_secs(u64::from(older_than_days) * 24 * 3600);
            let before = audit_cutoff(interop_gateway::convert::now_ms(), period);
            let mut records = 0;
            while let Some(a) = store.archive_disclosures(before).await? {
                let s = &a.segment;
                let note = match a.written {
                    true => "",
                    false => " (written by a pass that stopped before pruning)",
                };
                println!(
                    "{}: records {} to {}, {} pruned{note}",
                    s.path.display(),
                    s.first,
                    s.last,
                    a.pruned
                );
                records += a.pruned;
            }
            println!(
                "{records} records pruned; the archive is in {}",
                archive::dir_in(&data).display()
            );
            Ok(())
        }
    }
}

async fn export(store: &RedbStore, filter: DisclosureFilter) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut after = 0;
    loop {
        let page = store.disclosures(filter.clone(), after, 1_000).await?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        for (seq, d) in &page {
            if let Err(e) = writeln!(out, "{}", archive::json_line(*seq, d)) {
                // `| head` has read what it wanted.
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(());
                }
                return Err(e.into());
            }
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
